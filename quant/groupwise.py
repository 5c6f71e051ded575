"""Group-wise (block) weight quantization: one symmetric scale per `group_size` consecutive input columns.

Why groups: at 4 bits a per-output-channel scale is set by the row's largest weight, and on a ViT most of a row's
weights then land on a handful of levels (uniform W4A8 on DINOv2-S, min-max per channel: 21.6 dB). A scale per
32-128 columns follows the local range, which is what every real 4-bit kernel runs (onnxruntime's MatMulNBits,
XNNPACK's blockwise GEMM, Core ML's per-block int4).

Why MSE scales: min-max spends the grid on the group's extreme value. Shrinking the scale by a factor a ≤ 1 clips
that outlier but rounds the rest finer; per group, the factor is chosen on a grid to minimise the weight's squared
error, optionally weighted per input column by E[x_j²] (`importance`, the diagonal of the layer's input Hessian:
an error on a column the inputs never excite costs nothing at the output).

Measured on DINOv2-S (W4A8, held-out SQNR vs fp32, `benchmarks/suites/quant/w4_grid.py`): per-channel min-max 21.7 dB;
group min-max 27.1 / 18.1 / 14.1 dB at 32 / 64 / 128 columns (erratic: a few weights on the columns the massive
activations excite decide it); group MSE weighted by E[x²] 26.5 / 25.5 / 25.0 dB (stable).

Symmetric groups use the full signed range ([-8, 7] at 4 bits, zero-point 0), as MatMulNBits and XNNPACK do.
The layout of `scale` is fixed by `quant.plan.TensorQParams`: row-major over (out, in // group_size).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from quant.errors import QuantError
from quant.observers import MIN_SCALE, fake_quantize
from quant.plan import TensorQParams

ScaleMethod = Literal["mse", "minmax"]

# Shrink factors of the min-max scale searched per group (1.0 is min-max itself, so MSE never loses to it).
SHRINK_GRID: tuple[float, ...] = tuple(round(1.0 - 0.01 * i, 2) for i in range(56))  # 1.00 … 0.45


def group_range(bits: int) -> tuple[int, int]:
    """Full signed range of a symmetric group grid: [-2^(b-1), 2^(b-1) - 1]."""
    if not 2 <= bits <= 8:
        raise QuantError(f"group-wise weights take 2 to 8 bits, got {bits}")
    half = 2 ** (bits - 1)
    return -half, half - 1


def grouped(w: Tensor, group_size: int) -> Tensor:
    """`w` (out, ...) viewed as (out, groups, group_size) over its flattened input columns."""
    rows = w.shape[0]
    cols = w[0].numel()
    if group_size < 1 or cols % group_size:
        raise QuantError(
            f"a weight with {cols} input columns does not split into groups of {group_size}: pick a group size "
            "that divides it (32, 64 and 128 divide every DINOv2/ViT width)"
        )
    return w.reshape(rows, cols // group_size, group_size)


def _minmax_scale(g: Tensor, qmin: int, qmax: int) -> Tensor:
    """Smallest positive scale whose [qmin, qmax] grid covers each group's [min, max]."""
    lo = g.amin(dim=-1).clamp(max=0.0)
    hi = g.amax(dim=-1).clamp(min=0.0)
    return torch.maximum(hi / qmax, lo / qmin).clamp(min=MIN_SCALE)


def _round(g: Tensor, scale: Tensor, qmin: int, qmax: int) -> Tensor:
    return torch.clamp(torch.round(g / scale.unsqueeze(-1)), qmin, qmax) * scale.unsqueeze(-1)


@torch.no_grad()
def group_scales(
    w: Tensor,
    bits: int,
    group_size: int,
    method: ScaleMethod = "mse",
    importance: Tensor | None = None,
    grid: tuple[float, ...] = SHRINK_GRID,
) -> Tensor:
    """Per-group scales (out, groups): min-max, or the shrink factor of it with the least (weighted) error."""
    qmin, qmax = group_range(bits)
    g = grouped(w.detach().to(torch.float32), group_size)
    base = _minmax_scale(g, qmin, qmax)
    if method == "minmax":
        return base
    if method != "mse":
        raise QuantError(f"unknown group scale method {method!r}; valid: mse, minmax")
    weight = torch.ones_like(g[:1]) if importance is None else grouped(importance.reshape(1, -1).float(), group_size)
    best_err = torch.full_like(base, float("inf"))
    best = base.clone()
    for a in grid:
        scale = (base * a).clamp(min=MIN_SCALE)
        err = ((g - _round(g, scale, qmin, qmax)).pow(2) * weight).sum(dim=-1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, scale, best)
    return best


def groupwise_qparams(
    w: Tensor,
    bits: int,
    group_size: int,
    method: ScaleMethod = "mse",
    importance: Tensor | None = None,
) -> TensorQParams:
    """Symmetric per-group qparams of weight `w` (out, in) or (out, in, kh, kw) at `bits`.

    `method="mse"` searches each group's shrink factor of the min-max scale (`SHRINK_GRID`) for the least squared
    weight error, weighted per input column by `importance` (E[x_j²] over calibration inputs) when given.
    """
    qmin, qmax = group_range(bits)
    scales = group_scales(w, bits, group_size, method, importance)
    label = f"group{group_size}-{method}" + ("-weighted" if importance is not None and method == "mse" else "")
    return TensorQParams(
        bits=bits,
        symmetric=True,
        granularity="per_group",
        scale=[float(s) for s in scales.flatten()],
        zero_point=[0] * scales.numel(),
        quant_min=qmin,
        quant_max=qmax,
        observer=label,
        ch_axis=0,
        group_size=group_size,
    )


def group_scale_tensor(q: TensorQParams, shape: list[int] | tuple[int, ...]) -> Tensor:
    """The plan's per-group scales as a float32 (out, groups) tensor for a weight of `shape`."""
    rows, groups = q.groups(shape)
    return torch.tensor(q.scale, dtype=torch.float32).reshape(rows, groups)


def quantize_weight_ints(w: Tensor, q: TensorQParams) -> Tensor:
    """The integers (zero-point included) a kernel stores for `w` under `q`, shaped like `w`, int8 (int16 over 8 bits).

    Rounding is to nearest on the plan's grid: GPTQ and AdaRound write their choice back into the float weight,
    so this reproduces their integers.
    """
    w = w.detach().to(torch.float32)
    dtype = torch.int8 if q.bits <= 8 else torch.int16
    if q.granularity == "per_group":
        assert q.group_size is not None
        scale = group_scale_tensor(q, w.shape).unsqueeze(-1)
        ints = torch.clamp(torch.round(grouped(w, q.group_size) / scale), q.quant_min, q.quant_max)
        return ints.reshape(w.shape).to(dtype)
    scale, zero_point = q.tensors()
    if q.ch_axis is not None:
        view = [1] * w.dim()
        view[q.ch_axis] = -1
        scale, zero_point = scale.view(view), zero_point.view(view)
    return torch.clamp(torch.round(w / scale) + zero_point, q.quant_min, q.quant_max).to(dtype)


def fake_quantize_weight(w: Tensor, q: TensorQParams) -> Tensor:
    """Quantize→dequantize `w` exactly as `q` says, for every granularity (per_tensor, per_channel, per_group)."""
    if q.granularity != "per_group":
        scale, zero_point = q.tensors()
        return fake_quantize(w, scale, zero_point, q.quant_min, q.quant_max, q.ch_axis)
    assert q.group_size is not None
    scale = group_scale_tensor(q, w.shape).to(w.dtype).unsqueeze(-1)
    ints = torch.clamp(torch.round(grouped(w, q.group_size) / scale), q.quant_min, q.quant_max)
    return (ints * scale).reshape(w.shape)


def weight_sqnr_db(w: Tensor, q: TensorQParams) -> float:
    """Signal-to-quantization-noise of the weight itself under `q` (a quick check of a grid, not of the model)."""
    err = (w - fake_quantize_weight(w, q)).pow(2).sum().clamp(min=1e-30)
    return float(10 * torch.log10(w.pow(2).sum() / err))
