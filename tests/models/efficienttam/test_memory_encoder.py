"""Our memory encoder against the official one: same keys, same numbers, exports cleanly."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from benchmarks.peers.efficienttam_official import official_config, randomize_
from edgevit.models.efficienttam.config import VARIANTS
from edgevit.models.efficienttam.memory_encoder import MemoryEncoder

CFG = dataclasses.replace(VARIANTS["ti"], image_size=256)


def _assert_close(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.shape == ref.shape
    diff = (ours - ref).abs().max().item()
    assert diff <= 1e-4 * max(1.0, ref.abs().max().item()), diff
    return diff


@pytest.fixture(scope="module")
def pair() -> tuple[torch.nn.Module, MemoryEncoder]:
    from hydra.utils import instantiate

    torch.manual_seed(0)
    ref = instantiate(copy.deepcopy(official_config("ti", CFG.image_size)["memory_encoder"])).eval()
    randomize_(ref, seed=1, redrawn="gamma")
    ours = MemoryEncoder(CFG).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    h = CFG.feat_size
    pix_feat = torch.randn(2, CFG.d_model, h, h, generator=gen)
    # What the tracker feeds: sigmoid of mask logits scaled to [-10, 10].
    mask = torch.sigmoid(3 * torch.randn(2, 1, CFG.image_size, CFG.image_size, generator=gen)) * 20 - 10
    return pix_feat, mask


def test_state_dict_keys_and_shapes_match(pair: tuple[torch.nn.Module, MemoryEncoder]) -> None:
    ref, ours = pair
    shapes = {k: v.shape for k, v in ours.state_dict().items()}
    assert shapes == {k: v.shape for k, v in ref.state_dict().items()}


def test_matches_reference(pair: tuple[torch.nn.Module, MemoryEncoder], inputs: tuple[torch.Tensor, ...]) -> None:
    ref, ours = pair
    pix_feat, mask = inputs
    with torch.no_grad():
        expected = ref(pix_feat, mask, skip_mask_sigmoid=True)
        got = ours(pix_feat, mask)
        without_mask = ours(pix_feat, torch.zeros_like(mask))
    feats = expected["vision_features"]
    assert got.shape == (2, CFG.mem_dim, CFG.feat_size, CFG.feat_size)
    assert feats.std() > 0.1 and feats.std(dim=(2, 3)).min() > 1e-3
    assert (got - without_mask).abs().max() > 0.1  # the mask branch contributes
    _assert_close(got, feats)
    _assert_close(ours.vision_pos_enc, expected["vision_pos_enc"][0][:1])


def test_export_matches_eager(pair: tuple[torch.nn.Module, MemoryEncoder], inputs: tuple[torch.Tensor, ...]) -> None:
    _, ours = pair
    program = torch.export.export(ours, inputs)
    with torch.no_grad():
        _assert_close(program.module()(*inputs), ours(*inputs))
