"""The whole EfficientTAM as one module with the official state-dict layout, and its four deploy units.

Submodule and parameter names equal the official `SAM2Base` (455 keys), so `{"model": state_dict}`
checkpoints load strictly with no key map. The video loop is not here: see `edgevit/video/tracker.py`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.init import trunc_normal_

from converters.unit import DeployUnit
from edgevit.models.efficienttam.config import EfficientTAMConfig
from edgevit.models.efficienttam.image_encoder import ImageEncoder
from edgevit.models.efficienttam.mask_decoder import MaskDecoder
from edgevit.models.efficienttam.memory_attention import MemoryAttention
from edgevit.models.efficienttam.memory_encoder import MemoryEncoder
from edgevit.models.efficienttam.prompt_encoder import PromptEncoder
from edgevit.models.layers import MLP
from edgevit.models.spec import ModelSpec


class EfficientTAM(nn.Module):
    def __init__(self, cfg: EfficientTAMConfig, name: str = "efficienttam", variant: str = "s") -> None:
        super().__init__()
        self.cfg = cfg
        self.spec = ModelSpec(
            name=name,
            variant=variant,
            input_size=(cfg.image_size, cfg.image_size),
            task="video-object-segmentation",
            layout="NCHW RGB float32 in [0,255]; the image_encoder unit normalises (ImageNet mean/std) itself",
            loop="video",
        )
        self.image_encoder = ImageEncoder(cfg)
        self.memory_attention = MemoryAttention(cfg)
        self.memory_encoder = MemoryEncoder(cfg)
        self.sam_prompt_encoder = PromptEncoder(cfg)
        self.sam_mask_decoder = MaskDecoder(cfg)
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(cfg.num_maskmem, 1, 1, cfg.mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, cfg.d_model))
        # turns a binary mask prompt (image resolution) into the decoder's low-res logit scale
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.obj_ptr_proj = MLP(cfg.d_model, cfg.d_model, cfg.d_model, 3)
        for p in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc, self.no_obj_ptr):
            trunc_normal_(p, std=0.02)

    def deploy_units(self) -> list[DeployUnit]:
        from edgevit.models.efficienttam.units import build_units

        return build_units(self)
