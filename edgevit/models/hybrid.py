"""Hybrid conv + attention classifiers: MobileViT (v1, v2) and EfficientFormer (v1), written for export.

These are the models Q-HyViT studies, because they mix what a quantizer finds hardest in one network:
BatchNorm'd convs, LayerNorm'd (MobileViT, EfficientFormer) or GroupNorm'd (MobileViTv2) attention, and
*bridge blocks* where a conv block hands its feature map to an attention block. `bridge_blocks()` names
those hand-overs so a quantizer can reconstruct each conv/attention pair jointly.

Structure, widths and depths follow timm's `mobilevit.py` / `byobnet.py` and `efficientformer.py` (and so
the papers): the parameter counts equal timm's published ones (the tests check them). Module names follow
timm's too, so its checkpoints should load strictly; unverified, as none is available offline.

Export-friendliness: the input size is fixed at build time, so every patch unfold/fold is a reshape + permute
with constant shapes (timm resizes a feature map that is not a multiple of the patch size; here such sizes
are rejected instead), attention is `F.scaled_dot_product_attention` (EfficientFormer's learned position
bias goes in as its additive mask), and there is no Python control flow on data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from converters.unit import DeployUnit
from edgevit.errors import EdgevitError
from edgevit.models.registry import Family, register_family
from edgevit.models.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, image_unit
from edgevit.models.vit import Block, LayerScale, Mlp, ViTConfig

# ml-cvnets trains MobileViT on [0, 1] RGB without mean/std normalisation (timm's cfg says the same).
UNNORMALISED_MEAN = (0.0, 0.0, 0.0)
UNNORMALISED_STD = (1.0, 1.0, 1.0)


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """timm's channel rounding, reproduced exactly: it decides the widths behind the parameter counts."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < round_limit * value else rounded


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
            raise EdgevitError(f"hybrid: MobileViT version must be 1 or 2, not {self.version}")
        if len(self.channels) != 5:
            raise EdgevitError(f"hybrid: MobileViT has 5 stages; channels has {len(self.channels)} entries")
        stride = 32 * self.patch_size
        if self.img_size % stride:
            raise EdgevitError(
                f"hybrid: img_size {self.img_size} must be a multiple of {stride} (32 x patch_size), so "
                "every unfold into patches is exact (no resize in the exported graph); MobileViT's own is 256"
            )
        if self.version == 1 and any(d % self.num_heads for d in self.transformer_dims):
            raise EdgevitError(
                f"hybrid: transformer_dims {self.transformer_dims} are not all divisible by num_heads {self.num_heads}"
            )


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
            raise EdgevitError(f"hybrid: EfficientFormer img_size {self.img_size} is not a multiple of 32")
        if not 1 <= self.num_vit <= self.depths[-1]:
            raise EdgevitError(
                f"hybrid: num_vit must be between 1 and the last stage's depth {self.depths[-1]}, "
                f"not {self.num_vit}: without attention blocks the model is not a hybrid"
            )


# --- shared layers -------------------------------------------------------------------------------------


class ConvNormAct(nn.Module):
    """Bias-free conv, BatchNorm, activation: the unit every backend folds into one conv (timm's names)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        act: type[nn.Module] | None = nn.SiLU,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = act() if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class InvertedResidual(nn.Module):
    """MobileNetV2 block (expand 1x1, depthwise 3x3, linear 1x1), named as timm's byobnet bottleneck."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, expand_ratio: float) -> None:
        super().__init__()
        mid = make_divisible(in_chs * expand_ratio)
        self.conv1_1x1 = ConvNormAct(in_chs, mid, 1)
        self.conv2_kxk = ConvNormAct(mid, mid, 3, stride=stride, groups=mid)
        self.conv3_1x1 = ConvNormAct(mid, out_chs, 1, act=None)
        self.residual = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3_1x1(self.conv2_kxk(self.conv1_1x1(x)))
        return out + x if self.residual else out


class ConvMlp(nn.Module):
    """MLP of 1x1 convs on NCHW: BatchNorm'd in EfficientFormer (timm's `ConvMlpWithNorm`), bare in v2."""

    def __init__(self, dim: int, hidden: int, act: type[nn.Module], norm: bool) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.norm1 = nn.BatchNorm2d(hidden) if norm else nn.Identity()
        self.act = act()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.norm2 = nn.BatchNorm2d(dim) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.fc2(self.act(self.norm1(self.fc1(x)))))


class ClassifierHead(nn.Module):
    """Global average pool then a linear, as `head.fc` (timm's key); features only when `num_classes` is 0."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


# --- MobileViT -----------------------------------------------------------------------------------------


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


# --- EfficientFormer -----------------------------------------------------------------------------------


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


# --- the models ----------------------------------------------------------------------------------------

ATTENTION_BLOCKS = (MobileViTBlock, MobileViTV2Block, MetaBlock1d)


@dataclass(frozen=True)
class BridgeBlock:
    """A conv block and the attention block it feeds, to be quantized and reconstructed as one unit.

    `path` holds the model's own modules from `conv` to `attn` inclusive (with any parameter-free reshape
    between them), so `path(x)` on the conv block's input gives the attention block's output.
    """

    conv_name: str
    attn_name: str
    path: nn.Sequential


def find_bridges(blocks: list[tuple[str, nn.Module]]) -> list[BridgeBlock]:
    """Each place where a conv block feeds an attention block, given every block in forward order."""
    bridges = []
    last_conv = None  # index of the latest block with parameters that is not an attention block
    for i, (name, block) in enumerate(blocks):
        if isinstance(block, ATTENTION_BLOCKS):
            if last_conv is not None:
                path = nn.Sequential(*(m for _, m in blocks[last_conv : i + 1]))
                bridges.append(BridgeBlock(blocks[last_conv][0], name, path))
            last_conv = None
        elif next(block.parameters(), None) is not None:
            last_conv = i
    return bridges


class HybridModel(nn.Module):
    """What MobileViT and EfficientFormer share: the classifier deploy unit and initialisation."""

    spec: ModelSpec
    img_size: int
    num_classes: int

    def _init_weights(self) -> None:
        """timm-like defaults, so an untrained model has realistic activation scales (calibration, tests)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def deploy_units(self) -> list[DeployUnit]:
        return [image_unit(self, self.img_size, "logits" if self.num_classes > 0 else "features")]


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
        return find_bridges(self.blocks_in_order())

    def forward_features(self, image: torch.Tensor) -> torch.Tensor:
        """The final feature map (B, C, H/32, W/32), before pooling."""
        return self.final_conv(self.stages(self.stem(image)))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(image))


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
        return find_bridges(self.blocks_in_order())

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


VARIANTS: dict[str, MobileViTConfig | EfficientFormerConfig] = {
    "mobilevit_xxs": _mobilevit("xxs"),
    "mobilevit_xs": _mobilevit("xs"),
    "mobilevit_s": _mobilevit("s"),
    "mobilevitv2_050": _mobilevitv2(0.5),
    "mobilevitv2_075": _mobilevitv2(0.75),
    "mobilevitv2_100": _mobilevitv2(1.0),
    "efficientformer_l1": EfficientFormerConfig(),
    "efficientformer_l3": EfficientFormerConfig(widths=(64, 128, 320, 512), depths=(4, 4, 12, 6), num_vit=4),
}


def build_hybrid(cfg: MobileViTConfig | EfficientFormerConfig, variant: str) -> HybridModel:
    task = "classification" if cfg.num_classes > 0 else "features"
    size = (cfg.img_size, cfg.img_size)
    builder: Callable[..., HybridModel]
    if isinstance(cfg, MobileViTConfig):
        spec = ModelSpec("hybrid", variant, size, task, mean=UNNORMALISED_MEAN, std=UNNORMALISED_STD)
        builder = MobileViT
    else:
        spec = ModelSpec("hybrid", variant, size, task, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        builder = EfficientFormer
    return builder(cfg, spec)


register_family(
    Family(
        name="hybrid",
        variants=VARIANTS,
        default_variant="mobilevit_xxs",
        build=build_hybrid,
        description="conv + attention hybrids: MobileViT (xxs/xs/s), MobileViTv2, EfficientFormer (L1, L3)",
    )
)
