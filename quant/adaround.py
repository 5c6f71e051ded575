"""AdaRound: a planned layer whose weights round up or down by a learned variable, on the plan's grid.

Per weight w with scale s (the plan's, fixed), the rounding is floor(w/s) + h(v), where
h(v) = clamp(sigmoid(v)·(ζ-γ) + γ, 0, 1) (ζ = 1.1, γ = -0.1: the rectified sigmoid, which reaches 0 and 1
exactly). The loss is the relative MSE of the block output against the float model's block output, plus
λ·mean(1 - |2h - 1|^β), which pushes each h to 0 or 1 as β is annealed from 20 to 2. At the end h is
hardened (v ≥ 0 rounds up).

One departure from AdaRound: v starts at ±`init_margin` on the side of rounding-to-nearest (h ≈ 0.96 or
0.04), not at the fractional part of w/s (where the soft weight is the float weight). The plan's weight
scales come from an output-aware search that already picked, per channel, the scale whose *nearest*
rounding serves the output best; from the fractional start, the few hundred iterations PTQ can afford
ended with a hard rounding worse than that nearest one on held-out samples (0.4-1.6 dB worse on every
unit of the tests' tiny hybrid tried, W4A8, 100 iterations); started there, learned rounding only moves
the weights whose flip helps the output.

`quant.reconstruction` drives these layers a unit at a time against the float model's unit outputs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from quant.fake_quant import FakeQuantize, accumulator_bias
from quant.layer_ops import layer_inputs
from quant.layer_search import layer_forward
from quant.plan import LayerQuant, TensorQParams

ZETA, GAMMA = 1.1, -0.1


def _broadcast(values: Tensor, q: TensorQParams, dims: int) -> Tensor:
    if q.ch_axis is None:
        return values.reshape([1] * dims)
    shape = [1] * dims
    shape[q.ch_axis] = -1
    return values.reshape(shape)


class _STEQuantize(FakeQuantize):
    """The plan's activation fake-quant with a straight-through gradient, so earlier layers still learn."""

    def forward(self, x: Tensor) -> Tensor:
        return x + (super().forward(x) - x).detach()


class AdaRoundLayer(nn.Module):
    """A planned layer during reconstruction: STE-quantized inputs, weight rounded by a learned h(v).

    `mode`: "soft" (training: h(v) in [0, 1]), "hard" (h ≥ 0.5 rounds up) or "nearest" (rounding to nearest,
    the baseline). Every mode uses the plan's scales and clamps to the plan's integer range.
    """

    def __init__(self, inner: nn.Module, layer: LayerQuant, init_margin: float = 2.0) -> None:
        super().__init__()
        self.inner, self.kind, self.mode = inner, layer.kind, "soft"
        self.input_quant = nn.ModuleList(_STEQuantize(q) for q in layer.inputs)
        # A conv with an output grid runs as the artifact's integer conv: output rounded, bias on the int32 grid.
        self.output_quant = _STEQuantize(layer.output) if layer.output is not None else None
        self.register_buffer("bias_q", accumulator_bias(inner, layer) if layer.output is not None else None)
        self.v: nn.Parameter | None = None
        if layer.weight is None or self.kind == "matmul":
            return
        q = layer.weight
        w = inner.weight.detach()
        scale, zero_point = q.tensors()
        self.register_buffer("scale", _broadcast(scale, q, w.dim()))
        self.register_buffer("zero_point", _broadcast(zero_point.to(w.dtype), q, w.dim()))
        self.quant_min, self.quant_max = q.quant_min, q.quant_max
        self.register_buffer("w_floor", torch.floor(w / self.scale))
        self.register_buffer("w_nearest", torch.round(w / self.scale))
        up = self.w_nearest > self.w_floor
        self.v = nn.Parameter(torch.where(up, init_margin, -init_margin).to(w.dtype))

    def rounding(self) -> Tensor:
        assert self.v is not None
        return (torch.sigmoid(self.v) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def integers(self) -> Tensor:
        """The integer weights for the current mode (hard or nearest), zero-point included."""
        assert self.v is not None
        base = self.w_nearest if self.mode == "nearest" else self.w_floor + (self.v >= 0).to(self.w_floor.dtype)
        return torch.clamp(base + self.zero_point, self.quant_min, self.quant_max)

    def weight_q(self) -> Tensor:
        if self.mode == "soft":
            q = torch.clamp(self.w_floor + self.rounding() + self.zero_point, self.quant_min, self.quant_max)
        else:
            q = self.integers()
        return (q - self.zero_point) * self.scale

    def regularizer(self, beta: float) -> Tensor:
        return (1.0 - (2.0 * self.rounding() - 1.0).abs().pow(beta)).sum()

    def forward(self, *args: Tensor) -> Tensor:
        inputs = [fq(t) for fq, t in zip(self.input_quant, layer_inputs(self.inner, args), strict=True)]
        weight = self.weight_q() if self.v is not None else None
        out = layer_forward(self.inner, self.kind, inputs, weight, self.bias_q)
        return out if self.output_quant is None else self.output_quant(out)
