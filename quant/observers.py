"""Observers: statistics of a tensor seen during calibration, turned into (scale, zero_point) for b bits.

Conventions (the ones XNNPACK, ONNX QDQ and Core ML accept for int8 and narrower, so a plan needs no
translation per backend):
- symmetric: signed, *restricted* range [-(2^(b-1)-1), 2^(b-1)-1], zero_point 0 (weights);
- asymmetric: signed, full range [-2^(b-1), 2^(b-1)-1] (activations). A backend that wants unsigned
  storage adds 2^(b-1) to every zero-point; nothing else changes.
- an activation grid takes the full range even when symmetric (`activation_range`): runtimes saturate a
  quantized activation at the type's ends (onnxruntime's QuantizeLinear at +127/−128, not ±127), so a restricted
  grid would clip one level apart from the artifact.
- the observed range is always widened to include 0, so zero (padding, ReLU/GELU floors, masked
  attention) is exactly representable and the zero-point always lands inside [qmin, qmax].

Statistics do not depend on the bit-width: an observer keeps them once and answers `qparams(bits)` for
any b, which is what lets sensitivity analysis and mixed precision try 4/6/8 bits without recalibrating.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor

from quant.errors import QuantError

# Smallest scale we emit: a constant-zero channel would otherwise give scale 0 and a division by zero in
# every runtime's quantize op.
MIN_SCALE = float(torch.finfo(torch.float32).eps)


def quant_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer range for `bits`: restricted and centred when symmetric, full otherwise (see module doc)."""
    if not 2 <= bits <= 16:
        raise QuantError(f"bit-width {bits} is not supported: use 2 to 16 bits")
    half = 2 ** (bits - 1)
    return (-(half - 1), half - 1) if symmetric else (-half, half - 1)


def activation_range(bits: int) -> tuple[int, int]:
    """Integer range of an activation grid, symmetric or not: the type's full range (see module doc)."""
    return quant_range(bits, symmetric=False)


def qparams_from_range(min_val: Tensor, max_val: Tensor, bits: int, symmetric: bool) -> tuple[Tensor, Tensor]:
    """(scale float32, zero_point int64) that map [min_val, max_val] (widened to include 0) onto the range."""
    qmin, qmax = quant_range(bits, symmetric)
    lo = torch.clamp(min_val.to(torch.float64), max=0.0)
    hi = torch.clamp(max_val.to(torch.float64), min=0.0)
    if symmetric:
        scale = (torch.maximum(-lo, hi) / qmax).to(torch.float32).clamp(min=MIN_SCALE)
        return scale, torch.zeros_like(scale, dtype=torch.int64)
    scale = ((hi - lo) / (qmax - qmin)).to(torch.float32).clamp(min=MIN_SCALE)
    zero_point = torch.round(qmin - lo / scale.to(torch.float64)).clamp(qmin, qmax).to(torch.int64)
    return scale, zero_point


def fake_quantize(
    x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, ch_axis: int | None = None
) -> Tensor:
    """Quantize then dequantize, so float code sees exactly the values an integer kernel would."""
    if ch_axis is not None:
        shape = [1] * x.dim()
        shape[ch_axis] = -1
        scale = scale.view(shape)
        zero_point = zero_point.view(shape)
    scale = scale.to(x.dtype)
    zero_point = zero_point.to(x.dtype)
    q = torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def channels_first(x: Tensor, ch_axis: int | None) -> Tensor:
    """View `x` as [C, N] (C = 1 per-tensor) so every observer reduces along one dimension."""
    x = x.detach().to(torch.float32)
    if ch_axis is None:
        return x.reshape(1, -1)
    return x.movedim(ch_axis, 0).reshape(x.shape[ch_axis], -1)


def reservoir_update(
    samples: Tensor | None, keys: Tensor | None, new: Tensor, max_samples: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Add the columns of `new` ([C, N]) to a uniform random sample of at most `max_samples` columns.

    Each column gets a random priority and the highest are kept: uniform over every batch seen (not
    biased toward the last ones) and deterministic for a seeded generator.
    """
    new_keys = torch.rand(new.shape[1], generator=generator)
    if samples is not None and keys is not None:
        new = torch.cat([samples, new], dim=1)
        new_keys = torch.cat([keys, new_keys])
    if new_keys.numel() > max_samples:
        new_keys, idx = torch.topk(new_keys, max_samples)
        new = new[:, idx]
    return new, new_keys


class Observer(ABC):
    """Running statistics of one tensor (per-tensor, or per channel along `ch_axis`)."""

    def __init__(self, symmetric: bool = False, ch_axis: int | None = None) -> None:
        self.symmetric = symmetric
        self.ch_axis = ch_axis
        self.min_val: Tensor | None = None
        self.max_val: Tensor | None = None
        self.num_updates = 0
        self._cache: dict[int, tuple[Tensor, Tensor]] = {}

    @property
    @abstractmethod
    def label(self) -> str:
        """Short description recorded in the plan, e.g. ``percentile(99.99)``."""

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        flat = channels_first(x, self.ch_axis)
        lo, hi = flat.amin(dim=1), flat.amax(dim=1)
        if self.min_val is None or self.max_val is None:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val = torch.minimum(self.min_val, lo)
            self.max_val = torch.maximum(self.max_val, hi)
        self.num_updates += 1
        self._cache.clear()

    def qparams(self, bits: int) -> tuple[Tensor, Tensor]:
        """(scale, zero_point), one entry per channel (a single entry per-tensor)."""
        if self.min_val is None or self.max_val is None:
            raise QuantError(f"{self.label} observer has seen no data: run calibration batches through it")
        if bits not in self._cache:
            self._cache[bits] = self._compute(bits)
        return self._cache[bits]

    @abstractmethod
    def _compute(self, bits: int) -> tuple[Tensor, Tensor]: ...


class MinMaxObserver(Observer):
    """The full observed range: no clipping error, but one outlier stretches every step."""

    @property
    def label(self) -> str:
        return "minmax"

    def _compute(self, bits: int) -> tuple[Tensor, Tensor]:
        assert self.min_val is not None and self.max_val is not None
        return qparams_from_range(self.min_val, self.max_val, bits, self.symmetric)


class _SampledObserver(Observer):
    """Keeps a uniform random sample of the values seen (all of them when `max_samples` is None)."""

    def __init__(self, symmetric: bool = False, ch_axis: int | None = None, max_samples: int | None = 65536) -> None:
        super().__init__(symmetric, ch_axis)
        self.max_samples = max_samples
        self._generator = torch.Generator().manual_seed(0)
        self._samples: Tensor | None = None
        self._keys: Tensor | None = None

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        super().update(x)
        flat = channels_first(x, self.ch_axis)
        if self.max_samples is None:
            flat = flat.clone()  # may be a view of a live weight that a later pass edits in place
            self._samples = flat if self._samples is None else torch.cat([self._samples, flat], dim=1)
            return
        self._samples, self._keys = reservoir_update(self._samples, self._keys, flat, self.max_samples, self._generator)

    @property
    def samples(self) -> Tensor:
        assert self._samples is not None
        return self._samples


class PercentileObserver(_SampledObserver):
    """Clips the tails at a percentile: trades a little clipping error for finer steps on the bulk."""

    def __init__(
        self,
        symmetric: bool = False,
        ch_axis: int | None = None,
        max_samples: int | None = 65536,
        percentile: float = 99.99,
    ) -> None:
        super().__init__(symmetric, ch_axis, max_samples)
        if not 50.0 < percentile <= 100.0:
            raise QuantError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = percentile

    @property
    def label(self) -> str:
        return f"percentile({self.percentile:g})"

    def _compute(self, bits: int) -> tuple[Tensor, Tensor]:
        q = self.percentile / 100.0
        x = self.samples
        if self.symmetric:
            hi = torch.quantile(x.abs(), q, dim=1)
            return qparams_from_range(-hi, hi, bits, symmetric=True)
        lo = torch.quantile(x, 1.0 - q, dim=1)
        hi = torch.quantile(x, q, dim=1)
        return qparams_from_range(lo, hi, bits, symmetric=False)


class MSEObserver(_SampledObserver):
    """OMSE (Choukroun et al. 2019): the clipping range that minimises the L2 error of the quantized tensor.

    The range is the observed one shrunk by a ratio r searched on a grid, independently per channel; the
    optimum depends on b (fewer levels favour more clipping), so it is searched for each bit-width asked.
    """

    def __init__(
        self,
        symmetric: bool = False,
        ch_axis: int | None = None,
        max_samples: int | None = 65536,
        grid: int = 100,
    ) -> None:
        super().__init__(symmetric, ch_axis, max_samples)
        self.grid = grid

    @property
    def label(self) -> str:
        return "mse"

    def _compute(self, bits: int) -> tuple[Tensor, Tensor]:
        assert self.min_val is not None and self.max_val is not None
        x = self.samples
        qmin, qmax = quant_range(bits, self.symmetric)
        best_err = torch.full((x.shape[0],), float("inf"))
        best_scale = torch.empty(x.shape[0])
        best_zp = torch.empty(x.shape[0], dtype=torch.int64)
        for k in range(1, self.grid + 1):
            r = k / self.grid
            scale, zp = qparams_from_range(self.min_val * r, self.max_val * r, bits, self.symmetric)
            err = (fake_quantize(x, scale, zp, qmin, qmax, ch_axis=0) - x).pow(2).sum(dim=1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_scale = torch.where(better, scale, best_scale)
            best_zp = torch.where(better, zp, best_zp)
        return best_scale, best_zp


ObserverFactory = Callable[..., Observer]

OBSERVERS: dict[str, ObserverFactory] = {
    "minmax": MinMaxObserver,
    "percentile": PercentileObserver,
    "mse": MSEObserver,
    "omse": MSEObserver,
}


def make_observer(
    spec: str | ObserverFactory, symmetric: bool, ch_axis: int | None, keep_all: bool = False
) -> Observer:
    """Build an observer from a name in `OBSERVERS` or a factory (e.g. a `functools.partial`).

    `keep_all` keeps every value instead of a sample: right for weights, which are seen once and whole.
    """
    factory = spec if callable(spec) else OBSERVERS.get(spec)
    if factory is None:
        raise QuantError(f"unknown observer {spec!r}: use one of {', '.join(sorted(OBSERVERS))}")
    target = factory.func if isinstance(factory, functools.partial) else factory
    if keep_all and isinstance(target, type) and issubclass(target, _SampledObserver):
        return factory(symmetric=symmetric, ch_axis=ch_axis, max_samples=None)
    return factory(symmetric=symmetric, ch_axis=ch_axis)
