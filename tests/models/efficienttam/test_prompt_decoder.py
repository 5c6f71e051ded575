"""Prompt encoder + mask decoder + mask selection against the reference `_forward_sam_heads`.

Every prompt is padded to `max_points` slots with UNUSED_LABEL, so equality with the reference (which sees
only the used tokens) also shows the empty slots are fully masked out.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmarks.peers.efficienttam_official import build_reference
from edgevit.models.efficienttam.config import EfficientTAMConfig
from edgevit.models.efficienttam.mask_decoder import MaskDecoder
from edgevit.models.efficienttam.prompt_encoder import PAD_LABEL, UNUSED_LABEL, PromptEncoder
from edgevit.video.mask_selection import (
    NO_OBJ_SCORE,
    apply_no_object_pointer,
    select_mask,
    stability_scores,
    use_multimask,
)

IMAGE_SIZE = 256
CFG = EfficientTAMConfig(embed_dim=192, num_heads=3, image_size=IMAGE_SIZE)
H = CFG.feat_size
RTOL = 1e-4  # max abs diff, relative to the reference output's largest magnitude


class PromptMaskDecoder(nn.Module):
    """The two units chained as a deploy unit would be, with the slot mask derived from the labels."""

    def __init__(self, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder) -> None:
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, mask_weight):
        sparse, dense = self.prompt_encoder(point_coords, point_labels, mask_input, mask_weight)
        valid = point_labels != UNUSED_LABEL
        return self.mask_decoder(image_embeddings, self.prompt_encoder.dense_pe, sparse, dense, valid)


def _build(obj_score_bias: float):
    ref = build_reference("ti", image_size=IMAGE_SIZE, seed=0, obj_score_bias=obj_score_bias)
    torch.manual_seed(123)  # a different init than the reference, so only loading can make them agree
    unit = PromptMaskDecoder(PromptEncoder(CFG), MaskDecoder(CFG)).eval()
    unit.prompt_encoder.load_state_dict(ref.sam_prompt_encoder.state_dict(), strict=True)
    unit.mask_decoder.load_state_dict(ref.sam_mask_decoder.state_dict(), strict=True)
    return ref, unit


@pytest.fixture(scope="module")
def models():
    return _build(obj_score_bias=20.0)


def _slots(coords: torch.Tensor | None, labels: torch.Tensor | None, batch: int):
    """The reference's tokens (its points + its appended pad) placed in `max_points` slots."""
    if coords is None:  # what `_forward_sam_heads` feeds when there is no point prompt
        coords, labels = torch.zeros(batch, 1, 2), torch.full((batch, 1), PAD_LABEL, dtype=torch.int32)
    n = coords.shape[1]
    slot_coords = torch.zeros(batch, CFG.max_points, 2)
    slot_labels = torch.full((batch, CFG.max_points), UNUSED_LABEL, dtype=torch.int32)
    slot_coords[:, :n], slot_labels[:, :n] = coords, labels
    slot_labels[:, n] = PAD_LABEL
    return slot_coords, slot_labels


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    diff = (ours - theirs).abs().max().item()
    assert diff <= RTOL * max(theirs.abs().max().item(), 1e-6), diff
    return diff


def _compare(ref, unit, feats, coords, labels, mask, multimask_output: bool) -> None:
    batch = feats.shape[0]
    with torch.no_grad():
        points = None if coords is None else {"point_coords": coords, "point_labels": labels}
        _, _, r_ious, r_masks, _, r_ptr, r_obj = ref._forward_sam_heads(
            backbone_features=feats, point_inputs=points, mask_inputs=mask, multimask_output=multimask_output
        )
        slot_coords, slot_labels = _slots(coords, labels, batch)
        mask_input = torch.zeros(batch, 1, 4 * H, 4 * H) if mask is None else mask
        mask_weight = torch.full((batch,), 0.0 if mask is None else 1.0)
        out = select_mask(*unit(feats, slot_coords, slot_labels, mask_input, mask_weight), multimask_output)
        ptr = apply_no_object_pointer(ref.obj_ptr_proj(out.output_token), out.object_score_logits, ref.no_obj_ptr)
    if multimask_output:
        r_ious = r_ious.max(dim=-1, keepdim=True).values
    assert out.low_res_masks.shape == r_masks.shape == (batch, 1, 4 * H, 4 * H)
    _close(out.low_res_masks, r_masks)
    _close(out.ious, r_ious)
    _close(out.object_score_logits, r_obj)
    _close(ptr, r_ptr)


def _feats(batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, CFG.d_model, H, H, generator=torch.Generator().manual_seed(seed))


def test_state_dict_and_dense_pe_match_reference(models):
    ref, unit = models
    for ours, theirs in [
        (unit.prompt_encoder, ref.sam_prompt_encoder),
        (unit.mask_decoder, ref.sam_mask_decoder),
    ]:
        assert {k: v.shape for k, v in ours.state_dict().items()} == {
            k: v.shape for k, v in theirs.state_dict().items()
        }
    assert "dense_pe" not in unit.prompt_encoder.state_dict()
    assert unit.prompt_encoder.dense_pe.is_contiguous()  # a channels-last constant breaks ExecuTorch
    torch.testing.assert_close(unit.prompt_encoder.dense_pe, ref.sam_prompt_encoder.get_dense_pe(), rtol=0, atol=0)


def test_reference_masks_are_non_trivial(models):
    ref, _ = models
    with torch.no_grad():
        masks = ref._forward_sam_heads(backbone_features=_feats(1, 0), multimask_output=True)[3]
    assert (masks != NO_OBJ_SCORE).all() and masks.std() > 1e-2


@pytest.mark.parametrize("multimask_output", [True, False])
def test_one_positive_click(models, multimask_output):
    coords = torch.tensor([[[100.0, 50.0]], [[30.0, 200.0]]])
    assert use_multimask(True, num_points=1) and use_multimask(False, num_points=1)
    _compare(*models, _feats(2, 1), coords, torch.ones(2, 1, dtype=torch.int32), None, multimask_output)


def test_box_and_negative_click(models):
    coords = torch.tensor([[[20.0, 30.0], [180.0, 200.0], [90.0, 100.0]]])
    labels = torch.tensor([[2, 3, 0]], dtype=torch.int32)
    multimask = use_multimask(True, num_points=3)
    assert not multimask
    _compare(*models, _feats(1, 2), coords, labels, None, multimask)


@pytest.mark.parametrize("multimask_output", [True, False])
def test_no_points_tracking_frame(models, multimask_output):
    assert use_multimask(False, num_points=0)
    feats = _feats(1, 3)
    if not multimask_output:  # with random weights mask 0 is unstable, so this runs the fallback
        with torch.no_grad():
            slot_coords, slot_labels = _slots(None, None, 1)
            masks = models[1](feats, slot_coords, slot_labels, torch.zeros(1, 1, 4 * H, 4 * H), torch.zeros(1))[0]
        assert stability_scores(masks[:, 0], CFG.dynamic_multimask_stability_delta).item() < 0.98
    _compare(*models, feats, None, None, None, multimask_output)


def test_mask_prompt(models):
    ref, unit = models
    mask = (torch.rand(1, 1, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(4)) > 0.5).float()
    with torch.no_grad():
        mask_input = ref.mask_downsample(mask)  # as `_use_mask_as_output` feeds it
    _compare(ref, unit, _feats(1, 4), None, None, mask_input, False)


def test_object_absent():
    ref, unit = _build(obj_score_bias=-20.0)
    coords = torch.tensor([[[100.0, 50.0]]])
    _compare(ref, unit, _feats(1, 5), coords, torch.ones(1, 1, dtype=torch.int32), None, True)


def test_stability_fallback_both_branches(models):
    """Sample 0 has a stable single mask (kept), sample 1 an unstable one (best multimask taken instead)."""
    ref, _ = models
    gen = torch.Generator().manual_seed(6)
    masks = torch.randn(2, 4, 4 * H, 4 * H, generator=gen)
    masks[0, 0] = masks[0, 0].sign() * 5.0
    masks[1, 0] *= 0.01
    ious = torch.rand(2, 4, generator=gen)
    tokens = torch.randn(2, 4, CFG.d_model, generator=gen)
    obj = torch.ones(2, 1)
    out = select_mask(masks, ious, tokens, obj, multimask_output=False)
    r_masks, r_ious = ref.sam_mask_decoder._dynamic_multimask_via_stability(masks, ious)
    torch.testing.assert_close(out.low_res_masks, r_masks, rtol=0, atol=0)
    torch.testing.assert_close(out.ious, r_ious, rtol=0, atol=0)
    torch.testing.assert_close(out.output_token, tokens[:, 0], rtol=0, atol=0)
    assert not torch.equal(r_masks[1], masks[1, :1])


def test_torch_export_matches_eager(models):
    _, unit = models
    coords, labels = _slots(torch.tensor([[[20.0, 30.0], [180.0, 200.0], [90.0, 100.0]]]), torch.tensor([[2, 3, 0]]), 1)
    args = (_feats(1, 7), coords, labels, torch.randn(1, 1, 4 * H, 4 * H), torch.ones(1))
    exported = torch.export.export(unit, args)
    with torch.no_grad():
        for ours, eager in zip(exported.module()(*args), unit(*args), strict=True):
            _close(ours, eager)
