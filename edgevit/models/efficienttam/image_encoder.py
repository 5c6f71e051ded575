"""EfficientTAM image encoder: plain ViT trunk (ViTDet-style windowed blocks) and a one-level neck.

Weight-compatible with the reference `image_encoder` (same state-dict keys and shapes). What the reference
recomputes on every call for a fixed input size — the bicubic resize of the 14x14 pretraining position
embedding and the neck's sine position encoding — is computed once into non-persistent buffers, so the
exported graph has no `upsample_bicubic2d` (Core ML rejects it) and no data-independent arithmetic.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgevit.models.efficienttam.config import EfficientTAMConfig
from edgevit.models.efficienttam.position import sine_position_encoding
from edgevit.models.layers import MLP, LayerNorm2d
from quant.modules import MatMul


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection to channels-last tokens (key `proj` as in the reference)."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Attention(nn.Module):
    """Multi-head self-attention over the tokens of [B, H, W, C] maps (fused `qkv`, then `proj`).

    `explicit_matmuls` (set by quantization, see `edgevit.pipeline.passes.quant_recipe.prepare`) computes
    Q·Kᵀ and A·V with the `MatMul` modules `qk` and `av`, so a plan quantizes them by name; otherwise it is
    one fused `scaled_dot_product_attention` (eager fp32 is ~20 % faster so; the exporters decompose it into
    the same matmul → softmax → matmul).
    """

    explicit_matmuls = False

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.qk = MatMul()
        self.av = MatMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        qkv = self.qkv(x.reshape(b, h * w, c))
        inner = qkv.shape[-1] // 3  # == c unless heads were pruned (the head width stays)
        # Slices rather than `unbind`, whose squeezes XNNPACK leaves undelegated.
        q, k, v = (self._heads(qkv[..., i * inner : (i + 1) * inner]) for i in range(3))
        if self.explicit_matmuls:
            attn = self.qk(q * q.shape[-1] ** -0.5, k.transpose(-2, -1)).softmax(dim=-1)
            out = self.av(attn, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, h, w, inner))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)


class Block(nn.Module):
    """Pre-norm transformer block; window blocks attend within `window_size` squares of a zero-padded map.

    The padding and window counts depend only on the (fixed) feature-map size, so they are plain Python
    integers at trace time and the graph has static shapes.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dim, num_layers=2, activation=nn.GELU)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        if self.window_size > 0:
            y = self._windowed_attention(y)
        else:
            y = self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws = self.window_size
        pad_h, pad_w = -h % ws, -w % ws
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        nh, nw = (h + pad_h) // ws, (w + pad_w) // ws
        windows = x.reshape(b, nh, ws, nw, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b * nh * nw, ws, ws, c)
        out = self.attn(windows)
        out = out.reshape(b, nh, nw, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, nh * ws, nw * ws, c)
        if pad_h or pad_w:
            out = out[:, :h, :w, :]
        return out


class ViT(nn.Module):
    """The trunk. `pos_embed` stays a parameter at its pretraining size (so checkpoints load); the copy
    resized to this model's input size lives in the non-persistent buffer `abs_pos` [1, h, w, C].

    `abs_pos` is a constant of the graph, so no gradient reaches `pos_embed` through it: this module is for
    inference and export, not for training the position embedding.
    """

    def __init__(self, cfg: EfficientTAMConfig) -> None:
        super().__init__()
        self.feat_size = cfg.feat_size
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        pretrain_grid = cfg.pretrain_img_size // cfg.patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, pretrain_grid * pretrain_grid + 1, cfg.embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                cfg.embed_dim,
                cfg.num_heads,
                cfg.mlp_ratio,
                cfg.window_size if i in cfg.window_block_indexes else 0,
            )
            for i in range(cfg.depth)
        )
        abs_pos = torch.empty(1, cfg.feat_size, cfg.feat_size, cfg.embed_dim)
        self.register_buffer("abs_pos", abs_pos, persistent=False)
        self.refresh_abs_pos()
        self.register_load_state_dict_post_hook(_refresh_after_load)

    @torch.no_grad()
    def refresh_abs_pos(self) -> None:
        """Recompute `abs_pos` from `pos_embed`; call it after editing `pos_embed` in place.

        Loading a state dict calls it automatically. Same resize as the reference `get_abs_pos`: drop the
        cls token, bicubic (align_corners=False) from the pretraining grid to the feature-map size.
        """
        grid = self.pos_embed[:, 1:]
        side = int(round(grid.shape[1] ** 0.5))
        grid = grid.reshape(1, side, side, -1)
        if side != self.feat_size:
            size = (self.feat_size, self.feat_size)
            grid = grid.permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=size, mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
        self.abs_pos.copy_(grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] image -> [B, C, S/16, S/16] features of the last block."""
        x = self.patch_embed(x) + self.abs_pos
        for block in self.blocks:
            x = block(x)
        return x.permute(0, 3, 1, 2)


def _refresh_after_load(module: nn.Module, incompatible_keys: Any) -> None:
    module.refresh_abs_pos()


class ViTDetNeck(nn.Module):
    """1x1 conv + LN + 3x3 conv + LN to `d_model` channels, bias-free (the reference's `neck_norm="LN"`)."""

    def __init__(self, in_dim: int, d_model: int) -> None:
        super().__init__()
        level = nn.Sequential(
            OrderedDict(
                conv_1x1=nn.Conv2d(in_dim, d_model, kernel_size=1, bias=False),
                norm_0=LayerNorm2d(d_model),
                conv_3x3=nn.Conv2d(d_model, d_model, kernel_size=3, padding=1, bias=False),
                norm_1=LayerNorm2d(d_model),
            )
        )
        # A one-element list only so the keys read `convs.0.*` like the reference's multi-level neck.
        self.convs = nn.ModuleList([level])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs[0](x)


class ImageEncoder(nn.Module):
    """Image -> `d_model`-channel features at stride 16, for a fixed `cfg.image_size`.

    The features are the reference's `vision_features` (== `backbone_fpn[-1]`); their constant sine
    position encoding (the reference's `vision_pos_enc[-1]`) is the buffer `vision_pos_enc`
    [1, d_model, h, w], kept out of the forward so the deploy unit has one output.
    """

    def __init__(self, cfg: EfficientTAMConfig) -> None:
        super().__init__()
        self.image_size = cfg.image_size
        self.trunk = ViT(cfg)
        self.neck = ViTDetNeck(cfg.embed_dim, cfg.d_model)
        pos = sine_position_encoding(cfg.d_model, cfg.feat_size, cfg.feat_size)
        self.register_buffer("vision_pos_enc", pos, persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] normalised image -> [B, d_model, S/16, S/16]."""
        return self.neck(self.trunk(image))
