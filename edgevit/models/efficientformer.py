"""EfficientFormer (v1): a conv stem, four Meta4D (pool mixer) stages, the last ending in Meta3D attention blocks.

A conv + attention hybrid (shared layers, bridge blocks: `hybrid_layers.py`). Structure, widths and depths
follow timm's `efficientformer.py` (and so the paper): the parameter counts equal timm's published ones (the
tests check them, with timm's distillation head, folded here at load time), and module names are timm's.

Export-friendliness: the input size is fixed at build time, attention is `F.scaled_dot_product_attention` with
the learned position bias as its additive mask, and there is no Python control flow on data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgevit.errors import EdgevitError
from edgevit.models.hybrid_layers import BridgeBlock, ConvMlp, HybridModel, find_bridges
from edgevit.models.registry import Family, register_family
from edgevit.models.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec
from edgevit.models.vit import LayerScale, Mlp


@dataclass(frozen=True)
class EfficientFormerConfig:
    img_size: int = 224
    widths: tuple[int, int, int, int] = (48, 96, 224, 448)
    depths: tuple[int, int, int, int] = (3, 2, 6, 4)  # blocks per stage, Meta3D ones included
    num_vit: int = 1  # the last `num_vit` blocks of the last stage are attention (Meta3D) blocks
    mlp_ratio: float = 4.0
    key_dim: int = 32
    num_heads: int = 8
    attn_ratio: int = 4  # value width = attn_ratio * key_dim per head
    pool_size: int = 3
    layer_scale_init: float = 1e-5
    num_classes: int = 1000

    @property
    def resolution(self) -> int:
        """Side of the token grid in the attention blocks (7 at 224 px)."""
        return self.img_size // 32

    def validate(self) -> None:
        """Reject configs that would only fail later, deep inside a forward pass or an export."""
        if self.img_size % 32:
            raise EdgevitError(f"efficientformer: img_size {self.img_size} is not a multiple of 32")
        if not 1 <= self.num_vit <= self.depths[-1]:
            raise EdgevitError(
                f"efficientformer: num_vit must be between 1 and the last stage's depth {self.depths[-1]}, "
                f"not {self.num_vit}: without attention blocks the model is not a hybrid"
            )


class Pooling(nn.Module):
    """PoolFormer's token mixer: average pool minus identity (the block adds the identity back)."""

    def __init__(self, pool_size: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) - x


class LayerScale2d(LayerScale):
    """`vit.LayerScale` over the channels of an NCHW map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1)


class MetaBlock2d(nn.Module):
    """EfficientFormer's Meta4D block: pool mixer and BatchNorm'd conv MLP; no attention."""

    def __init__(self, cfg: EfficientFormerConfig, dim: int) -> None:
        super().__init__()
        self.token_mixer = Pooling(cfg.pool_size)
        self.ls1 = LayerScale2d(dim, cfg.layer_scale_init)
        self.mlp = ConvMlp(dim, int(dim * cfg.mlp_ratio), nn.GELU, norm=True)
        self.ls2 = LayerScale2d(dim, cfg.layer_scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.token_mixer(x))
        return x + self.ls2(self.mlp(x))


class Flat(nn.Module):
    """NCHW map -> (B, H*W, C) tokens: where EfficientFormer crosses from conv layout to attention layout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


class EfficientFormerAttention(nn.Module):
    """Attention with 32-wide keys, 128-wide values and a learned bias per head and relative grid offset.

    The bias table is timm's (`attention_biases` indexed by the constant `attention_bias_idxs`); it enters
    `F.scaled_dot_product_attention` as the additive mask, and SDPA's default scale is the model's
    key_dim**-0.5.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: int, resolution: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.val_dim = attn_ratio * key_dim
        self.qkv = nn.Linear(dim, (2 * key_dim + self.val_dim) * num_heads)
        self.proj = nn.Linear(self.val_dim * num_heads, dim)
        pos = torch.stack(torch.meshgrid(torch.arange(resolution), torch.arange(resolution), indexing="ij")).flatten(1)
        rel = (pos[:, :, None] - pos[:, None, :]).abs()
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        self.register_buffer("attention_bias_idxs", rel[0] * resolution + rel[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, self.num_heads, -1).permute(0, 2, 1, 3)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        bias = self.attention_biases[:, self.attention_bias_idxs]
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(x.transpose(1, 2).reshape(b, n, -1))


class MetaBlock1d(nn.Module):
    """EfficientFormer's Meta3D block: a pre-LN transformer block with the biased attention above."""

    def __init__(self, cfg: EfficientFormerConfig, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mixer = EfficientFormerAttention(dim, cfg.key_dim, cfg.num_heads, cfg.attn_ratio, cfg.resolution)
        self.ls1 = LayerScale(dim, cfg.layer_scale_init)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))
        self.ls2 = LayerScale(dim, cfg.layer_scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.token_mixer(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class EfficientFormerStage(nn.Module):
    def __init__(self, cfg: EfficientFormerConfig, index: int) -> None:
        super().__init__()
        dim = cfg.widths[index]
        if index > 0:
            self.downsample = nn.Sequential()
            self.downsample.add_module("conv", nn.Conv2d(cfg.widths[index - 1], dim, 3, stride=2, padding=1))
            self.downsample.add_module("norm", nn.BatchNorm2d(dim))
        else:
            self.downsample = nn.Identity()
        depth = cfg.depths[index]
        num_vit = cfg.num_vit if index == len(cfg.depths) - 1 else 0
        blocks: list[nn.Module] = [MetaBlock2d(cfg, dim) for _ in range(depth - num_vit)]
        if num_vit:
            blocks.append(Flat())
            blocks.extend(MetaBlock1d(cfg, dim) for _ in range(num_vit))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


ATTENTION_BLOCKS = (MetaBlock1d,)


class EfficientFormer(HybridModel):
    """EfficientFormer (v1): a conv stem, four Meta4D stages, the last ending in Meta3D attention blocks."""

    def __init__(self, cfg: EfficientFormerConfig, spec: ModelSpec) -> None:
        super().__init__()
        cfg.validate()
        self.cfg, self.spec = cfg, spec
        self.img_size, self.num_classes = cfg.img_size, cfg.num_classes
        dim = cfg.widths[0]
        self.stem = nn.Sequential()
        self.stem.add_module("conv1", nn.Conv2d(3, dim // 2, 3, stride=2, padding=1))
        self.stem.add_module("norm1", nn.BatchNorm2d(dim // 2))
        self.stem.add_module("act1", nn.ReLU())
        self.stem.add_module("conv2", nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1))
        self.stem.add_module("norm2", nn.BatchNorm2d(dim))
        self.stem.add_module("act2", nn.ReLU())
        self.stages = nn.Sequential(*(EfficientFormerStage(cfg, i) for i in range(len(cfg.widths))))
        self.norm = nn.LayerNorm(cfg.widths[-1])
        self.head = nn.Linear(cfg.widths[-1], cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self._init_weights()

    def blocks_in_order(self) -> list[tuple[str, nn.Module]]:
        """Every block after the stem (stage downsamples included), by qualified name, in forward order."""
        out: list[tuple[str, nn.Module]] = []
        for i, stage in enumerate(self.stages):
            if not isinstance(stage.downsample, nn.Identity):
                out.append((f"stages.{i}.downsample", stage.downsample))
            out.extend((f"stages.{i}.blocks.{j}", b) for j, b in enumerate(stage.blocks))
        return out

    def bridge_blocks(self) -> list[BridgeBlock]:
        """The single conv -> attention hand-over: the last Meta4D block, `Flat`, the first Meta3D block."""
        return find_bridges(self.blocks_in_order(), ATTENTION_BLOCKS)

    def forward_features(self, image: torch.Tensor) -> torch.Tensor:
        """Final-normed tokens (B, (H/32)*(W/32), C) of the last stage."""
        return self.norm(self.stages(self.stem(image)))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(image).mean(dim=1))

    def remap_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fold timm's distillation head into the class head.

        timm's EfficientFormer answers `(head(x) + head_dist(x)) / 2` at inference; that average of two
        linears is one linear with averaged weights and biases, so the deployed graph carries a single head.
        """
        if "head_dist.weight" not in sd:
            return sd
        sd = dict(sd)
        for p in ("weight", "bias"):
            sd[f"head.{p}"] = (sd[f"head.{p}"] + sd.pop(f"head_dist.{p}")) / 2
        return sd


VARIANTS: dict[str, EfficientFormerConfig] = {
    "efficientformer_l1": EfficientFormerConfig(),
    "efficientformer_l3": EfficientFormerConfig(widths=(64, 128, 320, 512), depths=(4, 4, 12, 6), num_vit=4),
}


def build_efficientformer(cfg: EfficientFormerConfig, variant: str) -> EfficientFormer:
    task = "classification" if cfg.num_classes > 0 else "features"
    size = (cfg.img_size, cfg.img_size)
    return EfficientFormer(cfg, ModelSpec("efficientformer", variant, size, task, mean=IMAGENET_MEAN, std=IMAGENET_STD))


register_family(
    Family(
        name="efficientformer",
        variants=VARIANTS,
        default_variant="efficientformer_l1",
        build=build_efficientformer,
        description="conv + attention hybrid: EfficientFormer (L1, L3)",
    )
)
