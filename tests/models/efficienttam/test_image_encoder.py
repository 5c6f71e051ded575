"""Our export-friendly image encoder against the official one: same keys, same numbers, exports cleanly."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from benchmarks.peers.efficienttam_official import official_config, randomize_
from edgevit.models.efficienttam.config import VARIANTS
from edgevit.models.efficienttam.image_encoder import ImageEncoder

CFG = dataclasses.replace(VARIANTS["ti"], image_size=256)  # 16x16 features: window blocks pad 16 -> 28


def _assert_close(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.shape == ref.shape
    diff = (ours - ref).abs().max().item()
    assert diff <= 1e-4 * max(1.0, ref.abs().max().item()), diff
    return diff


@pytest.fixture(scope="module")
def pair() -> tuple[torch.nn.Module, ImageEncoder]:
    from hydra.utils import instantiate

    torch.manual_seed(0)
    ref = instantiate(copy.deepcopy(official_config("ti", CFG.image_size)["image_encoder"])).eval()
    randomize_(ref, seed=1)
    ours = ImageEncoder(CFG).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(1, 3, CFG.image_size, CFG.image_size, generator=torch.Generator().manual_seed(2))


def test_state_dict_keys_and_shapes_match(pair: tuple[torch.nn.Module, ImageEncoder]) -> None:
    ref, ours = pair
    shapes = {k: v.shape for k, v in ours.state_dict().items()}
    assert shapes == {k: v.shape for k, v in ref.state_dict().items()}


def test_matches_reference(pair: tuple[torch.nn.Module, ImageEncoder], image: torch.Tensor) -> None:
    ref, ours = pair
    with torch.no_grad():
        expected = ref(image)
        got = ours(image)
    feats = expected["vision_features"]
    assert torch.equal(feats, expected["backbone_fpn"][-1])
    assert got.shape == (1, CFG.d_model, CFG.feat_size, CFG.feat_size)
    assert feats.std() > 0.1 and feats.std(dim=(2, 3)).min() > 1e-3  # varies over channels and space
    _assert_close(got, feats)
    _assert_close(ours.vision_pos_enc, expected["vision_pos_enc"][-1][:1])


def test_loading_pos_embed_refreshes_resized_buffer(pair: tuple[torch.nn.Module, ImageEncoder]) -> None:
    from sam2.modeling.backbones.utils import get_abs_pos

    ref, _ = pair
    ours = ImageEncoder(CFG)
    state = ref.state_dict()
    state["trunk.pos_embed"] = torch.randn(state["trunk.pos_embed"].shape)
    ours.load_state_dict(state, strict=True)
    expected = get_abs_pos(state["trunk.pos_embed"], True, (CFG.feat_size, CFG.feat_size))
    _assert_close(ours.trunk.abs_pos, expected)
    assert "trunk.abs_pos" not in ours.state_dict() and "vision_pos_enc" not in ours.state_dict()


def test_export_matches_eager(pair: tuple[torch.nn.Module, ImageEncoder], image: torch.Tensor) -> None:
    _, ours = pair
    program = torch.export.export(ours, (image,))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not [t for t in targets if "bicubic" in t or "interpolate" in t or "upsample" in t], targets
    with torch.no_grad():
        _assert_close(program.module()(image), ours(image))
