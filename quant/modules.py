"""The modules quantization adds to or expects in a model: named attention matmuls and SQ-b's smoothed Linears.

Kept apart from `quant.fake_quant` because models import `MatMul` to expose their attention products by name,
and a model file should not pull in the calibration machinery to do so.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MatMul(nn.Module):
    """`a @ b` as a module, so a model can expose its attention matmuls to quantization by name."""

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.matmul(a, b)


class ChannelAffine(nn.Module):
    """x ↦ (x - shift) * inv_scale per last-dim channel: SQ-b's op where no LayerNorm can absorb it."""

    def __init__(self, shift: Tensor, inv_scale: Tensor) -> None:
        super().__init__()
        self.register_buffer("shift", shift.detach().clone())
        self.register_buffer("inv_scale", inv_scale.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.shift) * self.inv_scale


class SmoothedLinear(nn.Linear):
    """A Linear preceded by its own float `ChannelAffine`; still an nn.Linear under the same name.

    Quantization applies to the *smoothed* input (the output of `smooth`), which is the whole point.
    """

    def __init__(self, linear: nn.Linear, smooth: ChannelAffine) -> None:
        nn.Module.__init__(self)  # not nn.Linear.__init__: the weights come from `linear`, no re-init
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.smooth = smooth

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.smooth(x), self.weight, self.bias)
