"""MobileViT (v1, v2): conv-only stages of inverted residuals, then attention stages on unfolded patches.

A conv + attention hybrid (shared layers, bridge blocks: `hybrid_layers.py`). Structure, widths and depths
follow timm's `mobilevit.py` / `byobnet.py` (and so the papers): the parameter counts equal timm's published
ones (the tests check them), and module names are timm's.

Export-friendliness: the input size is fixed at build time, so every patch unfold/fold is a reshape + permute
with constant shapes (timm resizes a feature map that is not a multiple of the patch size; here such sizes
are rejected instead), attention is `F.scaled_dot_product_attention`, and there is no Python control flow on
data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgevit.errors import EdgevitError
from edgevit.models.hybrid_layers import (
    BridgeBlock,
    ConvMlp,
    ConvNormAct,
    HybridModel,
    InvertedResidual,
    find_bridges,
    make_divisible,
)
from edgevit.models.registry import Family, register_family
from edgevit.models.spec import ModelSpec
from edgevit.models.vit import Block, ViTConfig

# ml-cvnets trains MobileViT on [0, 1] RGB without mean/std normalisation (timm's cfg says the same).
UNNORMALISED_MEAN = (0.0, 0.0, 0.0)
UNNORMALISED_STD = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class MobileViTConfig:
    version: int = 1  # 1: MHSA + LayerNorm + fusion conv (MobileViT); 2: linear attention + GroupNorm (v2)
    img_size: int = 256
    stem_channels: int = 16
    channels: tuple[int, ...] = (16, 24, 48, 64, 80)  # output channels of the five stages
    mv2_blocks: tuple[int, int] = (1, 3)  # inverted residuals in the two conv-only stages
    transformer_dims: tuple[int, int, int] = (64, 80, 96)  # token width in the three attention stages
    transformer_depths: tuple[int, int, int] = (2, 4, 3)
    expand_ratio: float = 2.0  # inverted-residual expansion
    num_heads: int = 4  # v1 only: v2's separable attention has no heads
    patch_size: int = 2
    head_channels: int = 320  # 1x1 conv before pooling (v1); 0: none (v2)
    num_classes: int = 1000

    def validate(self) -> None:
        """Reject configs that would only fail later, deep inside a forward pass or an export."""
        if self.version not in (1, 2):
            raise EdgevitError(f"mobilevit: MobileViT version must be 1 or 2, not {self.version}")
        if len(self.channels) != 5:
            raise EdgevitError(f"mobilevit: MobileViT has 5 stages; channels has {len(self.channels)} entries")
        stride = 32 * self.patch_size
        if self.img_size % stride:
            raise EdgevitError(
                f"mobilevit: img_size {self.img_size} must be a multiple of {stride} (32 x patch_size), so "
                "every unfold into patches is exact (no resize in the exported graph); MobileViT's own is 256"
            )
        if self.version == 1 and any(d % self.num_heads for d in self.transformer_dims):
            raise EdgevitError(
                f"mobilevit: transformer_dims {self.transformer_dims} are not all divisible by "
                f"num_heads {self.num_heads}"
            )


class ClassifierHead(nn.Module):
    """Global average pool then a linear, as `head.fc` (timm's key); features only when `num_classes` is 0."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


class MobileViTBlock(nn.Module):
    """MobileViT v1: local 3x3 + 1x1 convs, unfold to patches, pre-LN transformer, fold, 1x1 proj, fuse.

    The transformer layers are `vit.Block`s with MobileViT's SiLU MLP, so the quantization and pruning passes
    that know ViT blocks find the same `attn.qkv` / `mlp.fc1` layers here.
    """

    def __init__(self, chs: int, dim: int, depth: int, num_heads: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.conv_kxk = ConvNormAct(chs, chs, 3)
        self.conv_1x1 = nn.Conv2d(chs, dim, 1, bias=False)
        block_cfg = ViTConfig(embed_dim=dim, num_heads=num_heads, mlp_ratio=2.0, norm_eps=1e-5)
        self.transformer = nn.Sequential(*(Block(block_cfg) for _ in range(depth)))
        for block in self.transformer:
            block.mlp.act = nn.SiLU()
        self.norm = nn.LayerNorm(dim)
        self.conv_proj = ConvNormAct(dim, chs, 1)
        self.conv_fusion = ConvNormAct(2 * chs, chs, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_1x1(self.conv_kxk(x))
        b, c, h, w = x.shape
        p = self.patch_size
        nh, nw = h // p, w // p
        # [B, C, nh*p, nw*p] -> [B*p*p, nh*nw, C]: attention runs among the patches sharing a pixel position
        x = x.reshape(b, c, nh, p, nw, p).permute(0, 3, 5, 2, 4, 1).reshape(b * p * p, nh * nw, c)
        x = self.norm(self.transformer(x))
        x = x.reshape(b, p, p, nh, nw, c).permute(0, 5, 3, 1, 4, 2).reshape(b, c, h, w)
        x = self.conv_proj(x)
        return self.conv_fusion(torch.cat((shortcut, x), dim=1))


class LinearSelfAttention(nn.Module):
    """MobileViTv2's separable attention, linear in the token count, on [B, C, P, N] maps with 1x1 convs."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.qkv_proj = nn.Conv2d(dim, 1 + 2 * dim, 1)
        self.out_proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value = self.qkv_proj(x).split([1, self.dim, self.dim], dim=1)
        scores = F.softmax(query, dim=-1)  # one score per patch, over the N patches
        context = (key * scores).sum(dim=-1, keepdim=True)
        return self.out_proj(F.relu(value) * context)


class LinearTransformerBlock(nn.Module):
    """Pre-norm block with GroupNorm(1) (LayerNorm over C, P, N), separable attention and a 1x1-conv MLP."""

    def __init__(self, dim: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim)
        self.attn = LinearSelfAttention(dim)
        self.norm2 = nn.GroupNorm(1, dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), nn.SiLU, norm=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MobileViTV2Block(nn.Module):
    """MobileViT v2: depthwise 3x3 + 1x1, unfold to [B, C, P, N], linear transformer, fold, 1x1 proj."""

    def __init__(self, chs: int, dim: int, depth: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.conv_kxk = ConvNormAct(chs, chs, 3, groups=chs)
        self.conv_1x1 = nn.Conv2d(chs, dim, 1, bias=False)
        self.transformer = nn.Sequential(*(LinearTransformerBlock(dim) for _ in range(depth)))
        self.norm = nn.GroupNorm(1, dim)
        self.conv_proj = ConvNormAct(dim, chs, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_1x1(self.conv_kxk(x))
        b, c, h, w = x.shape
        p = self.patch_size
        nh, nw = h // p, w // p
        x = x.reshape(b, c, nh, p, nw, p).permute(0, 1, 3, 5, 2, 4).reshape(b, c, p * p, nh * nw)
        x = self.norm(self.transformer(x))
        x = x.reshape(b, c, p, p, nh, nw).permute(0, 1, 4, 2, 5, 3).reshape(b, c, h, w)
        return self.conv_proj(x)


ATTENTION_BLOCKS = (MobileViTBlock, MobileViTV2Block)


class MobileViT(HybridModel):
    """MobileViT v1 / v2: two conv-only stages of inverted residuals, then three attention stages."""

    def __init__(self, cfg: MobileViTConfig, spec: ModelSpec) -> None:
        super().__init__()
        cfg.validate()
        self.cfg, self.spec = cfg, spec
        self.img_size, self.num_classes = cfg.img_size, cfg.num_classes
        self.stem = ConvNormAct(3, cfg.stem_channels, 3, stride=2)
        stages: list[nn.Sequential] = []
        in_chs = cfg.stem_channels
        for i, (out_chs, n) in enumerate(zip(cfg.channels[:2], cfg.mv2_blocks, strict=True)):
            stage = nn.Sequential()
            for j in range(n):
                stride = 2 if i == 1 and j == 0 else 1  # the first stage keeps the stem's resolution
                stage.append(InvertedResidual(in_chs, out_chs, stride, cfg.expand_ratio))
                in_chs = out_chs
            stages.append(stage)
        attn_stages = zip(cfg.channels[2:], cfg.transformer_dims, cfg.transformer_depths, strict=True)
        for out_chs, dim, depth in attn_stages:
            if cfg.version == 1:
                attn: nn.Module = MobileViTBlock(out_chs, dim, depth, cfg.num_heads, cfg.patch_size)
            else:
                attn = MobileViTV2Block(out_chs, dim, depth, cfg.patch_size)
            stages.append(nn.Sequential(InvertedResidual(in_chs, out_chs, 2, cfg.expand_ratio), attn))
            in_chs = out_chs
        self.stages = nn.Sequential(*stages)
        if cfg.head_channels:
            self.final_conv: nn.Module = ConvNormAct(in_chs, cfg.head_channels, 1)
            in_chs = cfg.head_channels
        else:
            self.final_conv = nn.Identity()
        self.head = ClassifierHead(in_chs, cfg.num_classes)
        self._init_weights()

    def blocks_in_order(self) -> list[tuple[str, nn.Module]]:
        """Every block after the stem, by qualified name, in forward order."""
        return [(f"stages.{i}.{j}", b) for i, stage in enumerate(self.stages) for j, b in enumerate(stage)]

    def bridge_blocks(self) -> list[BridgeBlock]:
        """The conv -> attention hand-overs, one per attention stage (`stages.{2,3,4}`).

        Each attention stage opens with a strided inverted residual (BatchNorm) that feeds the MobileViT
        block (LayerNorm or GroupNorm); the first is where the conv-only stages' output enters attention.
        """
        return find_bridges(self.blocks_in_order(), ATTENTION_BLOCKS)

    def forward_features(self, image: torch.Tensor) -> torch.Tensor:
        """The final feature map (B, C, H/32, W/32), before pooling."""
        return self.final_conv(self.stages(self.stem(image)))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(image))


def _mobilevit(size: str) -> MobileViTConfig:
    sizes = {  # channels, transformer dims, expand ratio, head channels (timm's mobilevit_{xxs,xs,s})
        "xxs": ((16, 24, 48, 64, 80), (64, 80, 96), 2.0, 320),
        "xs": ((32, 48, 64, 80, 96), (96, 120, 144), 4.0, 384),
        "s": ((32, 64, 96, 128, 160), (144, 192, 240), 4.0, 640),
    }
    channels, dims, expand, head = sizes[size]
    return MobileViTConfig(channels=channels, transformer_dims=dims, expand_ratio=expand, head_channels=head)


def _mobilevitv2(multiplier: float) -> MobileViTConfig:
    """MobileViTv2 at a width multiplier: timm's rounding, attention width half the stage width."""
    channels = tuple(int(c * multiplier) for c in (64, 128, 256, 384, 512))
    return MobileViTConfig(
        version=2,
        stem_channels=int(32 * multiplier),
        channels=channels,
        mv2_blocks=(1, 2),
        transformer_dims=tuple(make_divisible(0.5 * c) for c in channels[2:]),
        head_channels=0,
    )


VARIANTS: dict[str, MobileViTConfig] = {
    "mobilevit_xxs": _mobilevit("xxs"),
    "mobilevit_xs": _mobilevit("xs"),
    "mobilevit_s": _mobilevit("s"),
    "mobilevitv2_050": _mobilevitv2(0.5),
    "mobilevitv2_075": _mobilevitv2(0.75),
    "mobilevitv2_100": _mobilevitv2(1.0),
}


def build_mobilevit(cfg: MobileViTConfig, variant: str) -> MobileViT:
    task = "classification" if cfg.num_classes > 0 else "features"
    size = (cfg.img_size, cfg.img_size)
    return MobileViT(cfg, ModelSpec("mobilevit", variant, size, task, mean=UNNORMALISED_MEAN, std=UNNORMALISED_STD))


register_family(
    Family(
        name="mobilevit",
        variants=VARIANTS,
        default_variant="mobilevit_xxs",
        build=build_mobilevit,
        description="conv + attention hybrid: MobileViT (xxs/xs/s) and MobileViTv2 (0.5/0.75/1.0)",
    )
)
