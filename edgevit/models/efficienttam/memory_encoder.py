"""EfficientTAM memory encoder: fuses a frame's features with its predicted mask into a 64-channel memory.

Weight-compatible with the reference `memory_encoder`. Its sine position encoding depends only on the
feature-map size, so it is the constant buffer `vision_pos_enc` rather than an output of the forward.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgevit.models.efficienttam.config import EfficientTAMConfig
from edgevit.models.efficienttam.position import sine_position_encoding
from edgevit.models.layers import LayerNorm2d

# Official configs: 3x3 stride-2 convs down to stride 16, and two ConvNeXt blocks with 7x7 depthwise convs.
MASK_KERNEL, MASK_STRIDE, MASK_TOTAL_STRIDE = 3, 2, 16
FUSER_LAYERS, FUSER_KERNEL = 2, 7


class MaskDownSampler(nn.Module):
    """Mask [B,1,S,S] -> [B,d_model,S/16,S/16]: (conv, LN, GELU) per stride-2 step, channels x4 each step,
    then a 1x1 conv. Indices of `encoder` match the reference's Sequential (keys `encoder.{0,1,3,...,12}`)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        steps = round(math.log2(MASK_TOTAL_STRIDE) / math.log2(MASK_STRIDE))
        layers: list[nn.Module] = []
        channels = 1
        for _ in range(steps):
            out = channels * MASK_STRIDE**2
            layers += [
                nn.Conv2d(channels, out, MASK_KERNEL, stride=MASK_STRIDE, padding=MASK_KERNEL // 2),
                LayerNorm2d(out),
                nn.GELU(),
            ]
            channels = out
        layers.append(nn.Conv2d(channels, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(mask)


class CXBlock(nn.Module):
    """ConvNeXt block (depthwise conv, LN, MLP x4, layer scale `gamma`, residual).

    The reference normalises in NCHW with a mean/pow LayerNorm2d and then permutes; here the permute comes
    first so the norm is a single channels-last `layer_norm` feeding the linears directly. `norm` keeps the
    reference's key names (weight, bias).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=FUSER_KERNEL, padding=FUSER_KERNEL // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    """The reference's Fuser with its identity input projection dropped (it has no weights)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(FUSER_LAYERS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """(frame features, mask) -> memory features [B, mem_dim, h, w] for a fixed `cfg.image_size`.

    The mask must already be the memory encoder's input scale — sigmoid(logits) (or the binarised mask)
    times 20 minus 10 — as the reference receives it with `skip_mask_sigmoid=True`; that scaling belongs to
    the tracker, which decides between sigmoid and binarisation per frame. The constant position encoding
    of the output (the reference's `vision_pos_enc[0]`) is the buffer `vision_pos_enc`
    [1, mem_dim, h, w].
    """

    def __init__(self, cfg: EfficientTAMConfig) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(cfg.d_model)
        self.pix_feat_proj = nn.Conv2d(cfg.d_model, cfg.d_model, kernel_size=1)
        self.fuser = Fuser(cfg.d_model)
        self.out_proj = nn.Conv2d(cfg.d_model, cfg.mem_dim, kernel_size=1)
        pos = sine_position_encoding(cfg.mem_dim, cfg.feat_size, cfg.feat_size)
        self.register_buffer("vision_pos_enc", pos, persistent=False)

    def forward(self, pix_feat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """pix_feat [B, d_model, h, w], mask [B, 1, 16h, 16w] -> [B, mem_dim, h, w]."""
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler(mask)
        return self.out_proj(self.fuser(x))
