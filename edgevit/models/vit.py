"""Plain ViT / DeiT / DINOv2-style vision transformers, written for export and weight-compatible with timm.

Module and parameter names follow timm's `VisionTransformer` (`patch_embed.proj`, `blocks.{i}.attn.qkv`,
`blocks.{i}.ls1.gamma`, `norm`, `head`), so timm and official DINOv2 state dicts load strictly, and pruning
and quantization passes find the same layers under the same names in every ViT.

Export-friendliness comes from fixing the input size at build time: the position embedding is stored at the
model's own token grid (resampled once, at load time, when a checkpoint was trained at another size) instead
of being interpolated on every call, attention is one `F.scaled_dot_product_attention`, and LayerNorm is
`nn.LayerNorm` so every exporter emits a single LayerNorm op.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from converters.unit import DeployUnit
from edgevit.errors import EdgevitError
from edgevit.models.registry import Family, register_family
from edgevit.models.spec import ModelSpec, image_unit


@dataclass(frozen=True)
class ViTConfig:
    img_size: int = 224
    patch_size: int = 16
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    class_token: bool = True
    layer_scale_init: float | None = None  # None: no LayerScale (ViT/DeiT); DINOv2 uses 1e-5
    norm_eps: float = 1e-6
    num_classes: int = 1000  # 0: no head, the model returns pooled features
    global_pool: str = "token"  # "token": the class token; "avg": the mean of the patch tokens

    @property
    def grid_size(self) -> int:
        """Side of the patch-token grid."""
        return self.img_size // self.patch_size

    @property
    def num_prefix_tokens(self) -> int:
        return 1 if self.class_token else 0

    def validate(self) -> None:
        """Reject configs that would only fail later, deep inside a forward pass."""
        if self.img_size % self.patch_size:
            raise EdgevitError(f"vit: img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise EdgevitError(f"vit: embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.global_pool not in ("token", "avg"):
            raise EdgevitError(f"vit: global_pool must be 'token' or 'avg', not {self.global_pool!r}")
        if self.global_pool == "token" and not self.class_token:
            raise EdgevitError("vit: global_pool='token' needs class_token=True; use global_pool='avg'")


class PatchEmbed(nn.Module):
    """Non-overlapping patches as one strided conv: a single op every backend runs natively."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection.

    The head count is read from `num_heads` and the head width from the weights, so a pass that prunes whole
    heads only has to shrink `qkv`/`proj` and update `num_heads`.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, -1))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel residual scale (CaiT, DINOv2); a parameter named `gamma` as in timm and DINOv2."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = Attention(dim, cfg.num_heads, cfg.qkv_bias)
        self.ls1 = LayerScale(dim, cfg.layer_scale_init) if cfg.layer_scale_init is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))
        self.ls2 = LayerScale(dim, cfg.layer_scale_init) if cfg.layer_scale_init is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


def resample_pos_embed(pos_embed: torch.Tensor, grid_size: int, num_prefix_tokens: int) -> torch.Tensor:
    """Resize a `(1, prefix + g*g, D)` position embedding to another square grid, bicubically.

    Bicubic with `align_corners=False` and no antialiasing is what timm, DINOv2 and HF Dinov2 do on every
    call; done here once, the result equals theirs at the fixed size and the exported graph has no resize.
    """
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old = math.isqrt(patches.shape[1])
    if old * old != patches.shape[1]:
        raise EdgevitError(f"position embedding of {patches.shape[1]} patch tokens is not a square grid")
    if old == grid_size:
        return pos_embed
    dim = patches.shape[-1]
    grid = patches.reshape(1, old, old, dim).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(grid_size, grid_size), mode="bicubic", align_corners=False, antialias=False)
    patches = grid.permute(0, 2, 3, 1).reshape(1, grid_size * grid_size, dim).to(pos_embed.dtype)
    return torch.cat([prefix, patches], dim=1)


class VisionTransformer(nn.Module):
    """A ViT for one fixed input size; `forward_features` returns every token for heads that need them."""

    def __init__(self, cfg: ViTConfig, spec: ModelSpec) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.spec = spec
        dim = cfg.embed_dim
        self.num_prefix_tokens = cfg.num_prefix_tokens
        self.patch_embed = PatchEmbed(cfg.patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cfg.class_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix_tokens + cfg.grid_size**2, dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.head = nn.Linear(dim, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        """timm's defaults, so an untrained model has realistic activation scales for calibration, tests."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, image: torch.Tensor) -> torch.Tensor:
        """Final-normed tokens `(B, prefix + grid*grid, D)`, class token first."""
        x = self.patch_embed(image)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.cfg.global_pool == "avg":
            pooled = tokens[:, self.num_prefix_tokens :].mean(dim=1)
        else:
            pooled = tokens[:, 0]
        return self.head(pooled)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(image))

    def remap_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Accept timm / official DINOv2 checkpoints trained at another resolution.

        The position embedding is resampled to this model's grid (DINOv2 ships it at 518 px, 37x37), and the
        official DINOv2 `mask_token`, used only by its masked-image pre-training, is dropped.
        """
        sd = {k: v for k, v in sd.items() if k != "mask_token"}
        if "pos_embed" in sd and sd["pos_embed"].shape != self.pos_embed.shape:
            sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], self.cfg.grid_size, self.num_prefix_tokens)
        return sd

    def deploy_units(self) -> list[DeployUnit]:
        return [image_unit(self, self.cfg.img_size, "logits" if self.cfg.num_classes > 0 else "features")]


VARIANTS: dict[str, ViTConfig] = {
    "ti16_224": ViTConfig(embed_dim=192, num_heads=3),
    "s16_224": ViTConfig(embed_dim=384, num_heads=6),
    "b16_224": ViTConfig(embed_dim=768, num_heads=12),
    # DINOv2 ViT-S/14 backbone (features only), at 224 px instead of its 518 px pre-training size.
    "dinov2_s14_224": ViTConfig(patch_size=14, embed_dim=384, num_heads=6, layer_scale_init=1e-5, num_classes=0),
}


def build_vit(cfg: ViTConfig, variant: str) -> VisionTransformer:
    task = "classification" if cfg.num_classes > 0 else "features"
    spec = ModelSpec(name="vit", variant=variant, input_size=(cfg.img_size, cfg.img_size), task=task)
    return VisionTransformer(cfg, spec)


register_family(
    Family(
        name="vit",
        variants=VARIANTS,
        default_variant="s16_224",
        build=build_vit,
        description="ViT / DeiT (Ti, S, B at patch 16) and the DINOv2 ViT-S/14 backbone; timm weight names",
    )
)
