"""The reference's choice among the mask decoder's four outputs, as pure torch run by the tracker.

The mask decoder unit always returns all four masks so its graph is the same on every frame; which one the
reference keeps depends on the prompt (host-side knowledge), so that choice lives here, outside the units.
Mirrors `MaskDecoder.forward` + `_dynamic_multimask_via_stability` and the selection, no-object masking and
object-pointer handling of `SAM2Base._forward_sam_heads`, with the official EfficientTAM settings
(`use_multimask_token_for_obj_ptr`, `pred_obj_scores`, `fixed_no_obj_ptr`, hard `is_obj_appearing`).
The bodies use gather/where only, so they also trace with `multimask_output` fixed.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from edgevit.models.efficienttam.config import EfficientTAMConfig

NO_OBJ_SCORE = -1024.0
"""Mask logit the reference writes everywhere when the object-score head says the object is absent."""

# The official `_use_multimask` settings.
MULTIMASK_OUTPUT_IN_SAM = True
MULTIMASK_OUTPUT_FOR_TRACKING = True
MULTIMASK_MIN_PT_NUM = 0
MULTIMASK_MAX_PT_NUM = 1


class SamHeadOutput(NamedTuple):
    """What `_forward_sam_heads` yields for the chosen mask (before the object-pointer projection)."""

    low_res_masks: torch.Tensor  # [B, 1, 4h, 4w] logits, NO_OBJ_SCORE where the object is absent
    ious: torch.Tensor  # [B, 1] predicted IoU of the chosen mask
    output_token: torch.Tensor  # [B, C] the token for `obj_ptr_proj`
    object_score_logits: torch.Tensor  # [B, 1]


def use_multimask(is_init_cond_frame: bool, num_points: int) -> bool:
    """Whether the reference asks the SAM head for three masks.

    `num_points` counts the prompt's points and box corners (the reference's `point_labels.size(1)`), not
    SAM's padding point nor empty slots; 0 on frames without a prompt. With the official settings this is
    "at most one point", on conditioning and tracking frames alike.
    """
    return (
        MULTIMASK_OUTPUT_IN_SAM
        and (is_init_cond_frame or MULTIMASK_OUTPUT_FOR_TRACKING)
        and MULTIMASK_MIN_PT_NUM <= num_points <= MULTIMASK_MAX_PT_NUM
    )


def stability_scores(mask_logits: torch.Tensor, delta: float) -> torch.Tensor:
    """IoU of a mask thresholded at +delta and at -delta, over the last two dims (1.0 for an empty mask)."""
    flat = mask_logits.flatten(-2)
    area_i = (flat > delta).sum(dim=-1).to(flat.dtype)
    area_u = (flat > -delta).sum(dim=-1).to(flat.dtype)
    return torch.where(area_u > 0, area_i / area_u.clamp_min(1), torch.ones_like(area_u))


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[b, index[b]] for x [B, M, ...] and index [B], keeping the selected dim (size 1)."""
    shape = (x.shape[0], 1, *x.shape[2:])
    return x.gather(1, index.reshape(-1, *([1] * (x.dim() - 1))).expand(shape))


def select_mask(
    masks: torch.Tensor,
    iou_pred: torch.Tensor,
    mask_tokens_out: torch.Tensor,
    object_score_logits: torch.Tensor,
    multimask_output: bool,
    stability_delta: float = EfficientTAMConfig.dynamic_multimask_stability_delta,
    stability_thresh: float = EfficientTAMConfig.dynamic_multimask_stability_thresh,
) -> SamHeadOutput:
    """Pick the reference's mask, IoU and object-pointer token from the decoder's four outputs.

    multimask_output (from `use_multimask`): the best predicted IoU among outputs 1..3, and that output's
    token. Otherwise output 0, unless its stability score is below `stability_thresh`, in which case the
    reference (at eval) falls back to the best multimask output — but still takes token 0 for the pointer.
    Masks of samples whose object score is <= 0 become NO_OBJ_SCORE.
    """
    best = iou_pred[:, 1:].argmax(dim=-1) + 1  # first maximum on ties, like torch.argmax in the reference
    if multimask_output:
        chosen, token_index = best, best
    else:
        is_stable = stability_scores(masks[:, 0], stability_delta) >= stability_thresh
        chosen, token_index = torch.where(is_stable, torch.zeros_like(best), best), torch.zeros_like(best)
    low_res = _take(masks, chosen)
    low_res = torch.where(object_score_logits[:, :, None, None] > 0, low_res, torch.full_like(low_res, NO_OBJ_SCORE))
    return SamHeadOutput(
        low_res_masks=low_res,
        ious=_take(iou_pred, chosen),
        output_token=_take(mask_tokens_out, token_index)[:, 0],
        object_score_logits=object_score_logits,
    )


def apply_no_object_pointer(
    obj_ptr: torch.Tensor, object_score_logits: torch.Tensor, no_obj_ptr: torch.Tensor
) -> torch.Tensor:
    """Replace the object pointer [B, C] by the learned `no_obj_ptr` [1, C] where the object is absent.

    The reference's hard variant (`soft_no_obj_ptr=False`, `fixed_no_obj_ptr=True`); `obj_ptr` is
    `obj_ptr_proj(output_token)`.
    """
    appearing = (object_score_logits > 0).to(obj_ptr.dtype)
    return appearing * obj_ptr + (1 - appearing) * no_obj_ptr
