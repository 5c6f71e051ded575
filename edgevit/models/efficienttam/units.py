"""EfficientTAM's four deploy units: static-shape modules that share the parent's parameters.

The split follows segment-anything (image encoder / prompt+mask decoder) plus SAM 2's memory path
(memory attention / memory encoder). Everything constant for a fixed input size (position encodings, RoPE
tables, temporal encodings) is a buffer inside the unit; everything that changes per frame is an input, so
an app or a converted runtime needs nothing but the unit files and the manifest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from converters.unit import DeployUnit
from edgevit.models.spec import IMAGENET_MEAN, IMAGENET_STD

NO_OBJ_SCORE = -1024.0  # the official placeholder logit for "object absent"


class ImageEncoderUnit(nn.Module):
    """RGB image in [0,255] → image features; normalisation lives here so apps feed raw pixels."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.encoder = model.image_encoder
        self.register_buffer("mean", 255.0 * torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", 255.0 * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder((image - self.mean) / self.std)


class MemoryAttentionUnit(nn.Module):
    """Condition the current frame's features on a fixed-capacity memory bank.

    Slot `i` of the bank holds the memory of the frame at temporal position `i` (0 = the conditioning
    frame, 1..num_maskmem-1 = older..newer previous frames); pointer slots are unordered because the official
    configs give object pointers no temporal encoding. With no valid memory at all (the prompted frame) the
    output is `features + no_mem_embed`, as the official `directly_add_no_mem_embed` path does.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        cfg = model.cfg
        self.attention = model.memory_attention
        self.d_model, self.mem_dim = cfg.d_model, cfg.mem_dim
        self.num_maskmem, self.max_obj_ptrs = cfg.num_maskmem, cfg.max_obj_ptrs
        hw = cfg.feat_size * cfg.feat_size
        curr_pos = model.image_encoder.vision_pos_enc.flatten(2).transpose(1, 2)  # [1,HW,256]
        # contiguous: ExecuTorch mis-handles strided constants (wrong numbers or a lowering error)
        self.register_buffer("curr_pos", curr_pos.detach().contiguous(), persistent=False)
        self.register_buffer("no_mem_embed", model.no_mem_embed.detach().reshape(1, -1, 1, 1).clone(), persistent=False)
        spatial = model.memory_encoder.vision_pos_enc.flatten(2).transpose(1, 2)  # [1,HW,64]
        # official: maskmem_tpos_enc[num_maskmem - t_pos - 1] for a memory at temporal position t_pos
        tpos = model.maskmem_tpos_enc.detach().flip(0).reshape(cfg.num_maskmem, 1, cfg.mem_dim)
        mem_pos = (spatial + tpos).reshape(1, cfg.num_maskmem * hw, cfg.mem_dim)
        ptr_tokens = cfg.max_obj_ptrs * (cfg.d_model // cfg.mem_dim)
        memory_pos = torch.cat([mem_pos, mem_pos.new_zeros(1, ptr_tokens, cfg.mem_dim)], dim=1)
        self.register_buffer("memory_pos", memory_pos.clone(), persistent=False)
        self.register_buffer("frame_ones", torch.ones(cfg.num_maskmem, 1), persistent=False)
        self.hw = hw

    def forward(
        self,
        features: torch.Tensor,  # [1,256,h,w]
        memory: torch.Tensor,  # [num_maskmem,64,h,w]
        memory_valid: torch.Tensor,  # [num_maskmem] 0/1
        obj_ptrs: torch.Tensor,  # [max_obj_ptrs,256]
        ptr_valid: torch.Tensor,  # [max_obj_ptrs] 0/1
    ) -> torch.Tensor:
        b, c, h, w = features.shape
        curr = features.flatten(2).transpose(1, 2)
        mem_tokens = memory.flatten(2).transpose(1, 2).reshape(1, self.num_maskmem * self.hw, self.mem_dim)
        split = self.d_model // self.mem_dim
        ptr_tokens = obj_ptrs.reshape(1, self.max_obj_ptrs * split, self.mem_dim)
        tokens = torch.cat([mem_tokens, ptr_tokens], dim=1)
        frame_valid = memory_valid.reshape(1, self.num_maskmem)
        out = self.attention(
            curr, self.curr_pos, tokens, self.memory_pos, frame_valid, ptr_valid.reshape(1, self.max_obj_ptrs)
        )
        out = out.transpose(1, 2).reshape(b, c, h, w)
        # 1 with any valid memory, else 0 (a product and a clamp: no reduction or boolean op to lower); an exact
        # blend, since the masking bias is finite and the output is finite even with every key masked
        has_memory = torch.clamp(frame_valid @ self.frame_ones, 0.0, 1.0).reshape(1, 1, 1, 1)
        return out * has_memory + (features + self.no_mem_embed) * (1.0 - has_memory)


class PromptMaskDecoderUnit(nn.Module):
    """Prompt encoder + mask decoder + object-pointer head, for all four mask tokens at once.

    Which of the four masks to keep (multimask / single / stability fallback) is a choice of the caller
    (`edgevit/video/mask_selection.py`); doing it outside keeps the unit free of data-dependent control flow.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.prompt_encoder = model.sam_prompt_encoder
        self.decoder = model.sam_mask_decoder
        self.mask_downsample = model.mask_downsample
        self.obj_ptr_proj = model.obj_ptr_proj
        self.no_obj_ptr = model.no_obj_ptr

    def forward(
        self,
        features: torch.Tensor,  # [1,256,h,w] memory-conditioned (or raw, for a mask prompt)
        point_coords: torch.Tensor,  # [1,P,2] in input-image pixels
        point_labels: torch.Tensor,  # [1,P] 1 pos, 0 neg, 2/3 box, -1 pad point, -2 unused slot
        mask_prompt: torch.Tensor,  # [1,1,S,S] binary mask prompt (zeros when unused)
        mask_weight: torch.Tensor,  # [1] 1.0 to use mask_prompt, 0.0 otherwise
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        mask_input = self.mask_downsample(mask_prompt)
        sparse, dense = self.prompt_encoder(point_coords, point_labels, mask_input, mask_weight)
        token_valid = point_labels > -2
        masks, ious, tokens, object_score = self.decoder(
            features, self.prompt_encoder.dense_pe, sparse, dense, token_valid
        )
        is_obj = (object_score > 0).to(features.dtype).unsqueeze(-1)  # [1,1,1]
        obj_ptrs = is_obj * self.obj_ptr_proj(tokens) + (1.0 - is_obj) * self.no_obj_ptr
        return masks, ious, obj_ptrs, object_score


class MemoryEncoderUnit(nn.Module):
    """Encode a frame's chosen low-res mask logits and its features into one memory slot."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        cfg = model.cfg
        self.encoder = model.memory_encoder
        self.image_size = cfg.image_size
        self.scale, self.bias = cfg.sigmoid_scale_for_mem_enc, cfg.sigmoid_bias_for_mem_enc

    def forward(
        self,
        features: torch.Tensor,  # [1,256,h,w] raw image features
        mask_logits: torch.Tensor,  # [1,1,4h,4w] chosen low-res mask logits
        binarize: torch.Tensor,  # [1] 1.0 on prompted frames (official: binarize clicks), else 0.0
    ) -> torch.Tensor:
        high = F.interpolate(mask_logits, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        prob = binarize * (high > 0).to(high.dtype) + (1.0 - binarize) * torch.sigmoid(high)
        return self.encoder(features, prob * self.scale + self.bias)


def build_units(model: nn.Module) -> list[DeployUnit]:
    cfg = model.cfg
    s, f, lo, p = cfg.image_size, cfg.feat_size, cfg.low_res_size, cfg.max_points
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, s, s, generator=g) * 255.0
    feats = torch.randn(1, cfg.d_model, f, f, generator=g)
    memory = torch.randn(cfg.num_maskmem, cfg.mem_dim, f, f, generator=g)
    memory_valid = torch.tensor([1.0, 0, 0, 1, 1, 1, 1])[: cfg.num_maskmem]
    ptrs = torch.randn(cfg.max_obj_ptrs, cfg.d_model, generator=g)
    ptr_valid = (torch.arange(cfg.max_obj_ptrs) < 5).float()
    coords = torch.rand(1, p, 2, generator=g) * s
    labels = torch.full((1, p), -2.0)
    labels[0, :2] = torch.tensor([1.0, -1.0])
    mask_prompt = torch.zeros(1, 1, s, s)
    mask_weight = torch.zeros(1)
    low_res = torch.randn(1, 1, lo, lo, generator=g)
    binarize = torch.zeros(1)
    return [
        DeployUnit(
            "image_encoder",
            ImageEncoderUnit(model).eval(),
            (image,),
            ("image",),
            ("features",),
            {"image": "RGB, float32 0..255, resized to the model's square input"},
            image_inputs=("image",),
        ),
        DeployUnit(
            "memory_attention",
            MemoryAttentionUnit(model).eval(),
            (feats, memory, memory_valid, ptrs, ptr_valid),
            ("features", "memory", "memory_valid", "obj_ptrs", "ptr_valid"),
            ("conditioned_features",),
            {
                "memory": "slot i = temporal position i (0: prompted frame); store slots as bfloat16 like the "
                "official predictor"
            },
        ),
        DeployUnit(
            "prompt_mask_decoder",
            PromptMaskDecoderUnit(model).eval(),
            (feats, coords, labels, mask_prompt, mask_weight),
            ("features", "point_coords", "point_labels", "mask_prompt", "mask_weight"),
            ("masks", "ious", "obj_ptrs", "object_score"),
            {"point_labels": "1 pos, 0 neg, 2/3 box corners, -1 pad point, -2 unused slot"},
        ),
        DeployUnit(
            "memory_encoder",
            MemoryEncoderUnit(model).eval(),
            (feats, low_res, binarize),
            ("features", "mask_logits", "binarize"),
            ("memory",),
        ),
    ]
