"""What the conv + attention hybrids (`mobilevit`, `efficientformer`) share: conv layers, bridge blocks, a base.

These are the models Q-HyViT studies, because they mix what a quantizer finds hardest in one network:
BatchNorm'd convs, LayerNorm'd (MobileViT, EfficientFormer) or GroupNorm'd (MobileViTv2) attention, and
*bridge blocks* where a conv block hands its feature map to an attention block. Each family's
`bridge_blocks()` names those hand-overs (with `find_bridges` below) so a quantizer can reconstruct each
conv/attention pair jointly; `quant.qhyvit.HasBridgeBlocks` is the hook's Protocol.

Module names follow timm's, so its checkpoints should load strictly; unverified, as none is available offline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from converters.unit import DeployUnit
from edgevit.models.spec import ModelSpec, image_unit


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """timm's channel rounding, reproduced exactly: it decides the widths behind the parameter counts."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < round_limit * value else rounded


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


@dataclass(frozen=True)
class BridgeBlock:
    """A conv block and the attention block it feeds, to be quantized and reconstructed as one unit.

    `path` holds the model's own modules from `conv` to `attn` inclusive (with any parameter-free reshape
    between them), so `path(x)` on the conv block's input gives the attention block's output.
    """

    conv_name: str
    attn_name: str
    path: nn.Sequential


def find_bridges(blocks: list[tuple[str, nn.Module]], attention: tuple[type[nn.Module], ...]) -> list[BridgeBlock]:
    """Each place where a conv block feeds an attention block (one of the `attention` types), given every
    block in forward order."""
    bridges = []
    last_conv = None  # index of the latest block with parameters that is not an attention block
    for i, (name, block) in enumerate(blocks):
        if isinstance(block, attention):
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
