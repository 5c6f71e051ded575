"""One layer's scale search: the candidate quantizers and the coordinate descent that picks among them.

`quant.scale_search` says why the loss is the Hessian-weighted output error and what is searched; here, per
layer, weights (per-tensor vs per-channel, each scale on a grid) and each input (asymmetric, zero-point guarded
or symmetric, on the same grid) are chosen in turn for `rounds` rounds, and min-max is kept if it scores lower.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from quant.errors import QuantError
from quant.layer_ops import layer_forward
from quant.observers import MIN_SCALE, activation_range, fake_quantize, qparams_from_range, quant_range
from quant.output_hessian import LayerData
from quant.plan import Granularity, LayerKind, TensorQParams

Scheme = Literal["asymmetric", "symmetric"]

DEFAULT_GRID: tuple[float, ...] = tuple(round(0.3 + 0.02 * i, 2) for i in range(36))  # 0.30 … 1.00


@dataclass(frozen=True)
class SearchConfig:
    """What the search may choose from and how much data it looks at.

    `act_granularities` defaults to per-tensor only: XNNPACK and ORT run per-tensor activations, so
    per-channel activation qparams (which tame the most dynamic maps) are a simulation-only opt-in.
    `max_bytes` bounds what is held at once (each layer's inputs, output and h on `max_samples` samples):
    layers are searched in groups that fit, one forward and backward pass over the samples per group.
    """

    grid: tuple[float, ...] = DEFAULT_GRID
    rounds: int = 2
    max_samples: int = 32
    max_bytes: int = 1 << 30
    probes: int = 1
    weight_granularities: tuple[Granularity, ...] = ("per_channel", "per_tensor")
    act_granularities: tuple[Granularity, ...] = ("per_tensor",)
    act_schemes: tuple[Scheme, ...] = ("asymmetric", "symmetric")
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.grid or any(not 0.0 < a <= 2.0 for a in self.grid):
            raise QuantError(f"scale grid must be non-empty multipliers in (0, 2], got {self.grid}")
        if self.rounds < 1 or self.max_samples < 1 or self.probes < 1 or self.max_bytes < 1:
            raise QuantError("rounds, max_samples, max_bytes and probes must all be at least 1")
        if not self.weight_granularities or not self.act_granularities or not self.act_schemes:
            raise QuantError("give at least one weight granularity, activation granularity and scheme")


def guard_zero_point(lo: Tensor, hi: Tensor, bits: int) -> tuple[Tensor, Tensor, Tensor]:
    """Asymmetric (scale, zero_point) mapping [lo, hi] itself (not widened to 0), zero-point clamped.

    Returns (scale, zero_point, overflowed). Where the range excludes 0 the exact zero-point lies outside
    [qmin, qmax]; clamping it shifts the grid so that 0 sits at one end of it and the far end of the range is
    clipped instead, which the search then weighs against widening the range or going symmetric.
    """
    qmin, qmax = quant_range(bits, symmetric=False)
    lo64, hi64 = lo.to(torch.float64), hi.to(torch.float64)
    scale = ((hi64 - lo64) / (qmax - qmin)).to(torch.float32).clamp(min=MIN_SCALE)
    raw = torch.round(qmin - lo64 / scale.to(torch.float64))
    overflowed = (raw < qmin) | (raw > qmax)
    return scale, raw.clamp(qmin, qmax).to(torch.int64), overflowed


@dataclass
class TensorQuantizer:
    """Fixed qparams for one tensor plus how they were found (what goes into the plan)."""

    bits: int
    symmetric: bool
    granularity: Granularity
    scale: Tensor
    zero_point: Tensor
    ch_axis: int | None
    label: str
    clamped: bool = False
    activation: bool = False  # an activation grid takes the full range even when symmetric (`activation_range`)

    @property
    def range(self) -> tuple[int, int]:
        return activation_range(self.bits) if self.activation else quant_range(self.bits, self.symmetric)

    def __call__(self, x: Tensor) -> Tensor:
        return fake_quantize(x, self.scale, self.zero_point, *self.range, ch_axis=self.ch_axis)

    def tensor_qparams(self) -> TensorQParams:
        qmin, qmax = self.range
        return TensorQParams(
            bits=self.bits,
            symmetric=self.symmetric,
            granularity=self.granularity,
            scale=[float(s) for s in self.scale],
            zero_point=[int(z) for z in self.zero_point],
            quant_min=qmin,
            quant_max=qmax,
            observer=self.label,
            ch_axis=self.ch_axis,
        )


def _out_channel_dim(kind: LayerKind) -> int:
    return 1 if kind == "conv2d" else -1


class LayerSearcher:
    """Coordinate descent over one layer's weight quantizer and each input's quantizer."""

    def __init__(self, data: LayerData, weight_bits: int, act_bits: int, config: SearchConfig) -> None:
        self.d = data
        self.weight_bits, self.act_bits, self.config = weight_bits, act_bits, config
        self.grid = torch.tensor(config.grid, dtype=torch.float32)
        self.w = data.module.weight.detach() if data.kind != "matmul" else None

    def loss(self, out: Tensor, per_channel: bool = False) -> Tensor:
        err = self.d.h * (out - self.d.output).pow(2)
        if not per_channel:
            return err.sum()
        dim = _out_channel_dim(self.d.kind) % err.dim()
        return err.movedim(dim, 0).reshape(err.shape[dim], -1).sum(dim=1)

    def quant_weight(self, wq: TensorQuantizer | None) -> Tensor | None:
        return self.w if wq is None or self.w is None else wq(self.w)

    def forward(self, weight: Tensor | None, aqs: Sequence[TensorQuantizer | None]) -> Tensor:
        inputs = [t if q is None else q(t) for t, q in zip(self.d.inputs, aqs, strict=True)]
        return layer_forward(self.d.module, self.d.kind, inputs, weight)

    # --- weights ---

    def weight_minmax(self) -> TensorQuantizer:
        assert self.w is not None
        amax = self.w.abs().flatten(1).amax(dim=1)
        scale, zp = qparams_from_range(-amax, amax, self.weight_bits, symmetric=True)
        return TensorQuantizer(self.weight_bits, True, "per_channel", scale, zp, 0, "minmax")

    def search_weight(self, aqs: Sequence[TensorQuantizer | None]) -> tuple[TensorQuantizer, float]:
        assert self.w is not None
        inputs = [t if q is None else q(t) for t, q in zip(self.d.inputs, aqs, strict=True)]
        qmax = quant_range(self.weight_bits, symmetric=True)[1]
        best: tuple[TensorQuantizer, float] | None = None
        for granularity in self.config.weight_granularities:
            per_channel = granularity == "per_channel"
            base = self.w.abs().flatten(1).amax(dim=1) if per_channel else self.w.abs().amax().reshape(1)
            base = (base / qmax).clamp(min=MIN_SCALE)
            ch_axis = 0 if per_channel else None
            best_loss = torch.full_like(base, float("inf"))
            best_scale = base.clone()
            for a in self.grid:
                scale = (base * a).clamp(min=MIN_SCALE)
                q = TensorQuantizer(
                    self.weight_bits,
                    True,
                    granularity,
                    scale,
                    torch.zeros_like(scale, dtype=torch.int64),
                    ch_axis,
                    "hessian",
                )
                loss = self.loss(layer_forward(self.d.module, self.d.kind, inputs, q(self.w)), per_channel)
                better = loss < best_loss
                best_loss = torch.where(better, loss, best_loss)
                best_scale = torch.where(better, scale, best_scale)
            zp = torch.zeros_like(best_scale, dtype=torch.int64)
            candidate = TensorQuantizer(self.weight_bits, True, granularity, best_scale, zp, ch_axis, "hessian")
            total = float(best_loss.sum())
            if best is None or total < best[1]:
                best = (candidate, total)
        assert best is not None
        return best

    # --- activations ---

    def act_ch_axis(self, x: Tensor, granularity: Granularity) -> int | None:
        if granularity == "per_tensor":
            return None
        return 1 if self.d.kind == "conv2d" else x.dim() - 1

    def act_minmax(self, index: int) -> TensorQuantizer:
        return self.minmax_of(self.d.inputs[index])

    def minmax_of(self, x: Tensor) -> TensorQuantizer:
        """The per-tensor min-max activation grid of `x` (an input, or a conv's output)."""
        scale, zp = qparams_from_range(x.min().reshape(1), x.max().reshape(1), self.act_bits, symmetric=False)
        return TensorQuantizer(self.act_bits, False, "per_tensor", scale, zp, None, "minmax")

    def act_candidates(self, x: Tensor, granularity: Granularity) -> Iterable[list[TensorQuantizer]]:
        """One list of candidates per family (widened/centred asymmetric, symmetric), one per grid point."""
        ch_axis = self.act_ch_axis(x, granularity)
        if ch_axis is None:
            lo, hi = x.min().reshape(1), x.max().reshape(1)
        else:
            flat = x.movedim(ch_axis, 0).reshape(x.shape[ch_axis], -1)
            lo, hi = flat.amin(dim=1), flat.amax(dim=1)
        bits = self.act_bits
        if "asymmetric" in self.config.act_schemes:
            family = []
            for a in self.grid:
                scale, zp = qparams_from_range(lo * a, hi * a, bits, symmetric=False)
                family.append(TensorQuantizer(bits, False, granularity, scale, zp, ch_axis, "hessian"))
            yield family
            if bool(((lo > 0) | (hi < 0)).any()):  # some range excludes 0: try it unwidened, zero-point guarded
                centre, half = (hi + lo) / 2, (hi - lo) / 2
                family = []
                for a in self.grid:
                    scale, zp, over = guard_zero_point(centre - a * half, centre + a * half, bits)
                    label = "hessian+zp-clamped" if bool(over.any()) else "hessian"
                    family.append(
                        TensorQuantizer(bits, False, granularity, scale, zp, ch_axis, label, clamped=bool(over.any()))
                    )
                yield family
        if "symmetric" in self.config.act_schemes:
            amax = torch.maximum(lo.abs(), hi.abs())
            family = []
            for a in self.grid:
                scale, zp = qparams_from_range(-amax * a, amax * a, bits, symmetric=True)
                family.append(TensorQuantizer(bits, True, granularity, scale, zp, ch_axis, "hessian", activation=True))
            yield family

    def search_act(
        self, index: int, wq: TensorQuantizer | None, aqs: list[TensorQuantizer | None]
    ) -> tuple[TensorQuantizer, float]:
        x = self.d.inputs[index]
        weight = self.quant_weight(wq)
        best: tuple[TensorQuantizer, float] | None = None
        for granularity in self.config.act_granularities:
            if granularity == "per_channel" and self.d.kind == "matmul":
                continue  # a per-channel operand of an activation matmul has no integer kernel at all
            for family in self.act_candidates(x, granularity):
                for q in family:
                    trial = list(aqs)
                    trial[index] = q
                    loss = float(self.loss(self.forward(weight, trial)))
                    if best is None or loss < best[1]:
                        best = (q, loss)
        assert best is not None
        return best

    @torch.no_grad()
    def run(self) -> tuple[TensorQuantizer | None, list[TensorQuantizer], float, float]:
        """(weight quantizer, input quantizers, loss, min-max loss), the min-max pair if it scored lower."""
        wq: TensorQuantizer | None = None
        aqs: list[TensorQuantizer | None] = [None] * len(self.d.inputs)
        loss = float("inf")
        for _ in range(self.config.rounds):
            if self.w is not None:
                wq, loss = self.search_weight(aqs)
            for i in range(len(aqs)):
                aqs[i], loss = self.search_act(i, wq, aqs)
        mm_w = self.weight_minmax() if self.w is not None else None
        mm_a = [self.act_minmax(i) for i in range(len(aqs))]
        minmax_loss = float(self.loss(self.forward(self.quant_weight(mm_w), mm_a)))
        if minmax_loss <= loss:
            return mm_w, mm_a, minmax_loss, minmax_loss
        return wq, [q for q in aqs if q is not None], loss, minmax_loss
