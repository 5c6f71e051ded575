"""Activation-aware input-channel scaling (AWQ, Lin et al., 2024), fp32-exact: for group-wise 4-bit weights, and
for the per-tensor 8-bit input grids of uniform 8-bit plans.

Why: a 4-bit group grid rounds every weight of a group by the same step, but an error on a column whose input is
large costs more at the output than one whose input is small. Scaling input channel j of a Linear by s_j,
  W·x = (W·diag(s)) · (x / s),
grows the weights of the most excited columns (they take a larger share of their group's range, so their relative
rounding error falls) and shrinks the same channels' activations (which also narrows the per-tensor 8-bit input
range the large channels set). Here s_j = mean|x_j|^α (normalised to a geometric mean of 1), α chosen per layer
group on a grid, including α = 0 (no scaling), so a layer is never made worse on the data that chose it.

Where the scale goes, so the model stays exact in fp32 and lowers with nothing new: 1/s is folded into the
LayerNorm that feeds the Linears (shared by all its consumers: qkv of a block, fc1 of an MLP), and W·diag(s)
into the Linears. Linears with no foldable producer (attn.proj after A·V, fc2 after GELU) are left alone: an
explicit `ChannelAffine` before them would be a runtime op, and it did not pay either — on DINOv2-S (8 calibration
/ 8 held-out images, W4A8 g32) scaling only the LayerNorm-fed Linears took held-out SQNR 25.8 → 27.4 dB (and
W8A8 33.4 → 37.8 dB: the divided channels are the LayerNorm outliers the 8-bit input grid was spending its range
on; benchmarks/results/quant_mixed.md), while also scaling proj and fc2 through explicit ops fell to 23.8 dB
although each layer's own error fell.
The record of each scaled Linear is a `quant.plan.Smoothing` (shift 0), replayed by `apply_smoothing_` like SQ-b's.

The objective is the one the plan will run: W·diag(s) on `group_size`-column symmetric groups with MSE scales
weighted by E[(x/s)²] (`quant.groupwise`), or with `group_size=None` on the per-channel symmetric min-max grid of
uniform 8-bit plans, inputs on a per-tensor asymmetric `act_bits` grid; α is fitted on part of the calibration
rows and scored on the rest (`holdout_split`), as SQ-b's α is: the layer-output error on rows that set the ranges
flatters strong scalings. (Searching the 8-bit plans' α with the 4-bit g32 grid instead held out 0.3 dB better on
DINOv2-S and 0.5 dB worse on the tests' tiny ViT: figures at `scale_for_8bit` in edgevit's quant recipe.)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import torch
from rich.progress import track
from torch import Tensor, nn

from quant.fake_quant import Batch, materialize_batches
from quant.groupwise import fake_quantize_weight, groupwise_qparams
from quant.metrics import model_outputs
from quant.observers import fake_quantize, qparams_from_range, quant_range
from quant.plan import Smoothing
from quant.smoothquant import (
    InputStats,
    apply_smoothing_,
    check_identity,
    check_targets,
    held_out_stats,
    per_channel_weight,
)

DEFAULT_ALPHAS: tuple[float, ...] = tuple(i / 10 for i in range(11))
_EPS = 1e-5


def awq_factors(rows: Tensor, alpha: float) -> Tensor:
    """Per-channel scale s = mean|x|^α over `rows` [C, n], normalised to geometric mean 1 (α = 0: all ones)."""
    s = rows.abs().mean(dim=1).clamp(min=_EPS).pow(alpha)
    return s / s.log().mean().exp()


def scaled_output_error(
    fit: InputStats,
    held: Tensor,
    weights: Sequence[Tensor],
    scale: Tensor,
    bits: int,
    group_size: int | None,
    act_bits: int,
) -> float:
    """Relative output error of the group's Linears on `held` rows [n, C] with inputs divided by `scale` (8-bit
    per-tensor grid from `fit`'s ranges) and weights times `scale` on MSE-searched groups (importance from `fit`),
    or per-channel min-max for `group_size=None`."""
    lo = (fit.min_val / scale).amin().clamp(max=0.0)
    hi = (fit.max_val / scale).amax().clamp(min=0.0)
    a_scale, a_zp = qparams_from_range(lo, hi, act_bits, symmetric=False)
    x_s = held / scale
    x_q = fake_quantize(x_s, a_scale, a_zp, *quant_range(act_bits, symmetric=False))
    importance = (fit.rows.T / scale).pow(2).mean(dim=0)
    error = 0.0
    for w in weights:
        w_s = w.detach() * scale
        w_q = (
            per_channel_weight(w_s, bits)
            if group_size is None
            else fake_quantize_weight(w_s, groupwise_qparams(w_s, bits, group_size, "mse", importance))
        )
        reference = held @ w.detach().T
        error += ((x_q @ w_q.T - reference).pow(2).sum() / reference.pow(2).sum().clamp(min=1e-30)).item()
    return error


def _choose(
    fit: InputStats,
    held: InputStats,
    weights: Sequence[Tensor],
    alphas: Sequence[float],
    bits: tuple[int, int | None, int],
) -> float:
    """The α (0: no scaling) whose scaling, fitted on `fit`, gives the least quantized error on `held`'s rows."""
    rows = held.rows.T
    errors = {a: scaled_output_error(fit, rows, weights, awq_factors(fit.rows, a), *bits) for a in {0.0, *alphas}}
    return min(errors, key=lambda a: (errors[a], a))


@torch.no_grad()
def awq_scale_(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    bits: int = 4,
    group_size: int | None = 32,
    act_bits: int = 8,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    layers: Iterable[str] | None = None,
    max_rows: int = 2048,
    min_batches: int = 2,
    progress: bool = False,
) -> dict[str, Smoothing]:
    """Scale the input channels of `model`'s LayerNorm-fed Linears in place (see the module docstring); returns the
    record of each scaled Linear (α > 0 chosen), for `QuantPlan.with_smoothing`. `group_size=None` searches α
    for per-channel min-max weights (uniform 8-bit plans); otherwise Linears whose width does not divide into
    `group_size` columns are skipped. Calibrate the plan on the model *after* this: the LayerNorm outputs change."""
    batches = materialize_batches(batches, min_batches, "AWQ calibration")
    was_training = model.training
    model.eval()
    try:
        names = [
            n
            for n in check_targets(model, layers)
            if group_size is None or model.get_submodule(n).in_features % group_size == 0
        ]
        reference, fit, held, feeds = held_out_stats(model, batches, names, max_rows, progress, fed_only=True)
        groups: dict[str, list[str]] = defaultdict(list)
        for name in names:
            if name in fit and name in held and name in feeds:
                groups[feeds[name]].append(name)
        records: dict[str, Smoothing] = {}
        for key, members in track(list(groups.items()), description="AWQ", transient=True, disable=not progress):
            weights = [model.get_submodule(m).weight for m in members]
            first = members[0]
            alpha = _choose(fit[first], held[first], weights, alphas, (bits, group_size, act_bits))
            if alpha == 0.0:
                continue
            rows = torch.cat([fit[first].rows, held[first].rows], dim=1)
            scale = awq_factors(rows, alpha)
            for member in members:
                records[member] = Smoothing(
                    alpha=alpha, scale=scale.tolist(), shift=[0.0] * scale.numel(), folded_into=key
                )
        apply_smoothing_(model, records)
        check_identity(reference, model_outputs(model, batches[:1]))
    finally:
        model.train(was_training)
    return records
