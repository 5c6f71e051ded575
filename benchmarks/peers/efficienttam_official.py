"""Build the official EfficientTAM (PyPI `efficient-track-anything==1.0`, imported as `sam2`) in Python.

The package ships no YAML configs, so the official configs' hyper-parameters are written here as a dict and
instantiated with hydra, exactly as `build_sam2_video_predictor` would after composing the YAML.
The parity tests (tests/models/efficienttam, tests/video) and the tracker benchmark's official predictor both
build it here; it never enters the edgevit package.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

# Imported plainly, not with pytest.importorskip: without the reference every parity test must fail, never skip.
import sam2  # noqa: F401  (pip install --no-deps efficient-track-anything==1.0 hydra-core iopath)
import torch
from PIL import Image

# efficienttam_{ti,s}[_512x512].yaml differ only in these three numbers.
TRUNK = {"ti": (192, 3), "s": (384, 6)}


# efficienttam_*_1/_2.yaml differ from the base configs only in the memory cross-attention class.
CROSS_ATTENTION = {
    0: "sam2.modeling.sam.transformer.RoPEAttention",
    1: "sam2.modeling.sam.transformer.EfficientRoPEAttention1",
    2: "sam2.modeling.sam.transformer.EfficientRoPEAttention2",
}


def official_config(size: str = "ti", image_size: int = 512, memory: int = 0) -> dict:
    """`memory` 1 or 2: the `_1`/`_2` configs' efficient memory cross-attention."""
    embed_dim, num_heads = TRUNK[size]
    rope = {
        "_target_": "sam2.modeling.sam.transformer.RoPEAttention",
        "rope_theta": 10000.0,
        "feat_sizes": [32, 32],
        "embedding_dim": 256,
        "num_heads": 1,
        "downsample_rate": 1,
        "dropout": 0.1,
    }
    return {
        "_target_": "sam2.sam2_video_predictor.SAM2VideoPredictor",
        "image_encoder": {
            "_target_": "sam2.modeling.backbones.image_encoder.ImageEncoder",
            "scalp": 0,
            "trunk": {
                "_target_": "sam2.modeling.backbones.vitdet.ViT",
                "patch_size": 16,
                "embed_dim": embed_dim,
                "depth": 12,
                "num_heads": num_heads,
                "mlp_ratio": 4.0,
                "qkv_bias": True,
                "drop_path_rate": 0.0,
                "use_rel_pos": False,
                "window_size": 14,
                "window_block_indexes": [0, 1, 3, 4, 6, 7, 9, 10],
            },
            "neck": {
                "_target_": "sam2.modeling.backbones.image_encoder.ViTDetNeck",
                "position_encoding": {
                    "_target_": "sam2.modeling.position_encoding.PositionEmbeddingSine",
                    "num_pos_feats": 256,
                    "normalize": True,
                    "scale": None,
                    "temperature": 10000,
                },
                "d_model": 256,
                "backbone_channel_list": [embed_dim],
                "neck_norm": "LN",
            },
        },
        "memory_attention": {
            "_target_": "sam2.modeling.memory_attention.MemoryAttention",
            "d_model": 256,
            "pos_enc_at_input": True,
            "layer": {
                "_target_": "sam2.modeling.memory_attention.MemoryAttentionLayer",
                "activation": "relu",
                "dim_feedforward": 2048,
                "dropout": 0.1,
                "pos_enc_at_attn": False,
                "self_attention": dict(rope),
                "d_model": 256,
                "pos_enc_at_cross_attn_keys": True,
                "pos_enc_at_cross_attn_queries": False,
                "cross_attention": dict(rope, rope_k_repeat=True, kv_in_dim=64, _target_=CROSS_ATTENTION[memory]),
            },
            "num_layers": 4,
        },
        "memory_encoder": {
            "_target_": "sam2.modeling.memory_encoder.MemoryEncoder",
            "out_dim": 64,
            "position_encoding": {
                "_target_": "sam2.modeling.position_encoding.PositionEmbeddingSine",
                "num_pos_feats": 64,
                "normalize": True,
                "scale": None,
                "temperature": 10000,
            },
            "mask_downsampler": {
                "_target_": "sam2.modeling.memory_encoder.MaskDownSampler",
                "kernel_size": 3,
                "stride": 2,
                "padding": 1,
            },
            "fuser": {
                "_target_": "sam2.modeling.memory_encoder.Fuser",
                "layer": {
                    "_target_": "sam2.modeling.memory_encoder.CXBlock",
                    "dim": 256,
                    "kernel_size": 7,
                    "padding": 3,
                    "layer_scale_init_value": 1e-6,
                    "use_dwconv": True,
                },
                "num_layers": 2,
            },
        },
        "num_maskmem": 7,
        "image_size": image_size,
        "sigmoid_scale_for_mem_enc": 20.0,
        "sigmoid_bias_for_mem_enc": -10.0,
        "use_mask_input_as_output_without_sam": True,
        "directly_add_no_mem_embed": True,
        "use_high_res_features_in_sam": False,
        "multimask_output_in_sam": True,
        "iou_prediction_use_sigmoid": True,
        "use_obj_ptrs_in_encoder": True,
        "add_tpos_enc_to_obj_ptrs": False,
        "only_obj_ptrs_in_the_past_for_eval": True,
        "pred_obj_scores": True,
        "pred_obj_scores_mlp": True,
        "fixed_no_obj_ptr": True,
        "multimask_output_for_tracking": True,
        "use_multimask_token_for_obj_ptr": True,
        "multimask_min_pt_num": 0,
        "multimask_max_pt_num": 1,
        "use_mlp_for_obj_ptr_proj": True,
        "compile_image_encoder": False,
        # build_sam2_video_predictor(apply_postprocessing=True) adds these overrides:
        "sam_mask_decoder_extra_args": {
            "dynamic_multimask_via_stability": True,
            "dynamic_multimask_stability_delta": 0.05,
            "dynamic_multimask_stability_thresh": 0.98,
        },
        "binarize_mask_from_pts_for_mem_enc": True,
    }


def build_reference(
    size: str = "ti",
    image_size: int = 512,
    seed: int = 0,
    obj_score_bias: float = 20.0,
    obj_score_gain: float = 1.0,
    memory: int = 0,
) -> torch.nn.Module:
    """The official video predictor with random weights (seeded).

    Random weights make the object-score head say "no object" on every frame, so every mask is empty and a
    comparison proves nothing (../shared/STACK.md); its last bias is raised so masks are non-trivial. With random
    weights the head's input hardly changes from frame to frame either, so its score moves by thousandths:
    `obj_score_gain` scales the head's last weight so a test can set the threshold (the bias) inside the range
    the score moves over and get frames both with and without the object.
    """
    from hydra.utils import instantiate

    torch.manual_seed(seed)
    model = instantiate(copy.deepcopy(official_config(size, image_size, memory)), _recursive_=True)
    with torch.no_grad():
        head = model.sam_mask_decoder.pred_obj_score_head.layers[-1]
        head.weight.mul_(obj_score_gain)
        head.bias.fill_(obj_score_bias)
    return model.eval()


def randomize_(module: torch.nn.Module, seed: int, redrawn: str = "pos_embed") -> None:
    """Perturb what the official init leaves trivial, which would hide how it is handled: parameters named
    `*redrawn` are drawn afresh (`pos_embed` starts at zero, a layer scale `gamma` at 1e-6), 1-D ones (norms,
    identity at init) get noise."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(redrawn):
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))


def write_jpgs(folder: Path, frames: Iterable[np.ndarray]) -> list[np.ndarray]:
    """Save frames as N.jpg, the only input the official predictor reads, and return them as read back, so both
    sides see the same (JPEG-decoded) pixels."""
    paths = []
    for i, frame in enumerate(frames):
        paths.append(folder / f"{i}.jpg")
        Image.fromarray(frame).save(paths[-1], quality=95)
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


@dataclass
class OfficialTrack:
    logits: list[torch.Tensor]  # [H,W] per frame at video resolution, -1024 everywhere when the object is absent
    object_scores: list[float]  # the mask decoder's object-score logit per frame (> 0: object present)


class FirstFramePrompt(Protocol):
    """What the official predictor is prompted with (`edgevit.video.tracker.Prompt` has these fields; a peer
    does not import edgevit)."""

    points: Sequence[tuple[float, float]]
    labels: Sequence[int]
    box: tuple[float, float, float, float] | None
    mask: np.ndarray | None


def official_track(ref: torch.nn.Module, folder: Path, prompt: FirstFramePrompt) -> OfficialTrack:
    """Track one object through the N.jpg frames in `folder` with the official predictor, prompted on frame 0."""
    scores: list[float] = []
    hook = ref.sam_mask_decoder.register_forward_hook(lambda m, i, out: scores.append(float(out[3].reshape(-1)[0])))
    try:
        with torch.inference_mode():
            state = ref.init_state(str(folder))
            if prompt.mask is not None:
                ref.add_new_mask(state, 0, 1, prompt.mask)
            else:
                pts = list(prompt.points)
                labels = list(prompt.labels)
                if prompt.box is not None:  # box corners go first, labelled 2 and 3
                    pts = [prompt.box[:2], prompt.box[2:]] + pts
                    labels = [2, 3] + labels
                ref.add_new_points(state, 0, 1, np.array(pts, dtype=np.float32), np.array(labels, dtype=np.int32))
            logits = [masks[0, 0].clone() for _, _, masks in ref.propagate_in_video(state)]
    finally:
        hook.remove()
    # one decoder call per frame (on a mask-prompted frame it only makes the object pointer)
    assert len(scores) == len(logits), f"{len(scores)} decoder calls for {len(logits)} frames"
    return OfficialTrack(logits, scores)
