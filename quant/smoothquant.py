"""SQ-b (SmoothQuant with a bias term) and OPT-m (per-layer search of the migration strength α), after
MPTQ-ViT (Tai & Wu, 2024).

Why: a ViT's LayerNorm outputs carry a few channels 15-44× larger than the rest and far from centred, so
a per-tensor activation quantizer spends its levels on them. Per input channel j of a Linear:
  shift  z_j = (max x_j + min x_j) / 2      centres the channel, so no range is wasted on one side;
  scale  s_j = max|x_j - z_j|^α / max|W_:,j|^(1-α)
                                             moves the remaining range from activations into weights,
  W·x + b = (W·diag(s)) · ((x - z) / s) + (b + W·z),
an identity in fp32. (x - z)/s is folded into the preceding LayerNorm's affine parameters where that
LayerNorm feeds only Linears (all consumers then share s and z); elsewhere an explicit float per-channel
op (`ChannelAffine`) is inserted before the Linear. OPT-m picks α per LayerNorm group / Linear on a grid
(plus "no smoothing") minimising the quantized layer-output error, so SQ-b never makes a layer worse than
plain PTQ under the same quantizer.

The α candidates are scored on held-out calibration batches (`holdout_split`), with ranges and factors
from the rest: scored on the rows that set the ranges, a strong α equalises every channel to exactly the
range it saw and wins there, then clips what new data puts outside it (measured on vit_distilled W8A8:
49.2 dB on calibration, 29.4 dB held out, below plain PTQ's 47.5). The chosen α is then applied with the
ranges of every calibration batch.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from rich.progress import track
from torch import Tensor, nn

from quant.errors import QuantError
from quant.fake_quant import (
    Batch,
    layer_kind,
    materialize_batches,
    quantizable_layers,
    run_batch,
)
from quant.metrics import model_outputs
from quant.modules import ChannelAffine, SmoothedLinear
from quant.observers import (
    channels_first,
    fake_quantize,
    qparams_from_range,
    quant_range,
    reservoir_update,
)
from quant.plan import Smoothing

DEFAULT_ALPHAS: tuple[float, ...] = tuple(i / 10 for i in range(11))
HOLDOUT_EVERY = 4  # every 4th calibration batch scores the α candidates
_EPS = 1e-5
EXPLICIT = "explicit"


@dataclass
class InputStats:
    """Per-channel range of a Linear's input over all calibration data, plus a sample of its rows."""

    min_val: Tensor
    max_val: Tensor
    rows: Tensor  # [C, n] sampled token rows
    keys: Tensor


def layernorm_feeds(model: nn.Module, example: Batch, linears: Iterable[str]) -> dict[str, str]:
    """Map each Linear in `linears` to the LayerNorm that feeds it directly, where folding is safe.

    Safe means: the LayerNorm runs once, has affine weight and bias, and every consumer of its output is
    one of `linears`, each run once. Found on the `torch.export` graph (module names come from
    `nn_module_stack`), because a Python-level guess would miss a hidden second consumer and break the
    fp32 identity. Models that do not export get explicit ops everywhere (correct, slightly slower).
    """
    wanted = set(linears)
    args = (example,) if isinstance(example, Tensor) else tuple(example)
    try:
        graph = torch.export.export(model, args, strict=False).graph
    except Exception as err:  # any export failure only costs the LayerNorm fold, never correctness
        warnings.warn(f"SQ-b: model does not export ({type(err).__name__}); using explicit smoothing ops", stacklevel=2)
        return {}

    def owner(node: torch.fx.Node) -> str | None:
        stack = node.meta.get("nn_module_stack")
        return list(stack.values())[-1][0] if stack else None

    ln_nodes, linear_calls = defaultdict(list), defaultdict(int)
    for node in graph.nodes:
        if node.target is torch.ops.aten.layer_norm.default:
            ln_nodes[owner(node)].append(node)
        elif node.target is torch.ops.aten.linear.default:
            linear_calls[owner(node)] += 1

    feeds: dict[str, str] = {}
    for ln_name, nodes in ln_nodes.items():
        if ln_name is None or len(nodes) != 1:
            continue
        ln = model.get_submodule(ln_name)
        if getattr(ln, "weight", None) is None or getattr(ln, "bias", None) is None:
            continue
        users = list(nodes[0].users)
        consumers = [owner(u) for u in users if u.target is torch.ops.aten.linear.default and u.args[0] is nodes[0]]
        if len(consumers) == len(users) and all(c in wanted and linear_calls[c] == 1 for c in consumers):
            feeds.update({c: ln_name for c in consumers})
    return feeds


def smoothing_factors(stats: InputStats, weights: Sequence[Tensor], alpha: float) -> tuple[Tensor, Tensor]:
    """(scale s, shift z) per input channel for migration strength `alpha` (weights share the input)."""
    shift = (stats.max_val + stats.min_val) / 2
    act_range = ((stats.max_val - stats.min_val) / 2).clamp(min=_EPS)
    w_range = torch.stack([w.detach().abs().amax(dim=0) for w in weights]).amax(dim=0).clamp(min=_EPS)
    scale = (act_range.pow(alpha) / w_range.pow(1 - alpha)).clamp(min=_EPS)
    return scale, shift


def quantized_output_error(
    stats: InputStats,
    weights: Sequence[Tensor],
    scale: Tensor,
    shift: Tensor,
    weight_bits: int,
    act_bits: int,
) -> float:
    """Relative error of the quantized layers' outputs on sampled rows, summed over the group.

    Activations per-tensor asymmetric with the full-data range, weights per-channel symmetric: the same
    quantizer the plan will use, so the search optimises what will actually run.
    """
    x = stats.rows.T
    x_s = (x - shift) / scale
    lo = ((stats.min_val - shift) / scale).amin()
    hi = ((stats.max_val - shift) / scale).amax()
    a_scale, a_zp = qparams_from_range(lo, hi, act_bits, symmetric=False)
    x_q = fake_quantize(x_s, a_scale, a_zp, *quant_range(act_bits, symmetric=False))
    error = 0.0
    for w in weights:
        w_s = w.detach() * scale
        w_q = per_channel_weight(w_s, weight_bits)
        reference = x_s @ w_s.T
        signal = (x @ w.detach().T).pow(2).sum().clamp(min=1e-30)
        error += ((x_q @ w_q.T - reference).pow(2).sum() / signal).item()
    return error


def per_channel_weight(w: Tensor, bits: int) -> Tensor:
    """`w` fake-quantized per output channel, symmetric min-max: the weight grid of uniform plans."""
    amax = w.abs().amax(dim=1)
    scale, zero_point = qparams_from_range(-amax, amax, bits, symmetric=True)
    return fake_quantize(w, scale, zero_point, *quant_range(bits, symmetric=True), ch_axis=0)


@torch.no_grad()
def collect_input_stats(
    model: nn.Module, batches: list[Batch], names: list[str], max_rows: int, progress: bool
) -> dict[str, InputStats]:
    found: dict[str, InputStats] = {}
    generator = torch.Generator().manual_seed(0)

    def make_hook(name: str):
        def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            flat = channels_first(args[0], -1)
            lo, hi = flat.amin(dim=1), flat.amax(dim=1)
            old = found.get(name)
            if old is None:
                rows, keys = reservoir_update(None, None, flat, max_rows, generator)
                found[name] = InputStats(lo, hi, rows, keys)
            else:
                rows, keys = reservoir_update(old.rows, old.keys, flat, max_rows, generator)
                found[name] = InputStats(torch.minimum(old.min_val, lo), torch.maximum(old.max_val, hi), rows, keys)

        return hook

    handles = [model.get_submodule(n).register_forward_pre_hook(make_hook(n)) for n in names]
    try:
        for batch in track(batches, description="SQ-b statistics", transient=True, disable=not progress):
            run_batch(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    return found


def holdout_split(batches: Sequence[Batch]) -> tuple[list[Batch], list[Batch]]:
    """(fit, held out): every `HOLDOUT_EVERY`-th batch held out (the last one when there are fewer), so
    the split is the same on every run and spread over the data's order."""
    if len(batches) < 2:
        raise QuantError(f"SQ-b needs at least 2 calibration batches to choose α on held-out data, got {len(batches)}")
    held = {i for i in range(len(batches)) if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1} or {len(batches) - 1}
    return [b for i, b in enumerate(batches) if i not in held], [b for i, b in enumerate(batches) if i in held]


def _merged(a: InputStats, b: InputStats) -> InputStats:
    """The ranges of both (the rows of `a`): what the chosen α is applied with."""
    return InputStats(torch.minimum(a.min_val, b.min_val), torch.maximum(a.max_val, b.max_val), a.rows, a.keys)


def _choose_alpha(
    fit: InputStats, held: InputStats, weights: Sequence[Tensor], alphas: Sequence[float], bits: tuple[int, int]
) -> float | None:
    """The α whose smoothing, fitted on `fit`, gives the lowest quantized error on `held`'s rows; None where no
    α beats leaving the layer alone."""
    scored = InputStats(fit.min_val, fit.max_val, held.rows, held.keys)  # fit's ranges, held-out rows
    identity = torch.ones_like(fit.min_val), torch.zeros_like(fit.min_val)
    best_alpha, best_err = None, quantized_output_error(scored, weights, *identity, *bits)
    for alpha in alphas:
        err = quantized_output_error(scored, weights, *smoothing_factors(fit, weights, alpha), *bits)
        if err < best_err:
            best_alpha, best_err = alpha, err
    return best_alpha


def check_targets(model: nn.Module, layers: Iterable[str] | None) -> list[str]:
    kinds = quantizable_layers(model)
    names = [n for n, k in kinds.items() if k == "linear"] if layers is None else list(layers)
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, SmoothedLinear):
            raise QuantError(f"layer {name!r} is already smoothed: run SQ-b once, on the float model")
        if layer_kind(module) != "linear":
            raise QuantError(f"SQ-b handles nn.Linear only: layer {name!r} is {type(module).__name__}")
    return names


@torch.no_grad()
def held_out_stats(
    model: nn.Module, batches: Sequence, names: Sequence[str], max_rows: int, progress: bool, fed_only: bool = False
) -> tuple[Any, dict, dict, dict[str, str]]:
    """What SQ-b and AWQ choose their scales from: the float output on the first batch (to check the folded model
    against), each named Linear's input statistics on a fit split and on a held-out split of the calibration
    batches (choosing on the batches it was fitted on overfits), and the LayerNorm feeding each. `fed_only`
    observes only the Linears a LayerNorm feeds (AWQ scales no other): half the Linears of a ViT block."""
    reference = model_outputs(model, batches[:1])
    feeds = layernorm_feeds(model, batches[0], names) if fed_only else None
    observed = [n for n in names if feeds is None or n in feeds]
    fit_batches, held_batches = holdout_split(batches)
    fit = collect_input_stats(model, fit_batches, observed, max_rows, progress)
    held = collect_input_stats(model, held_batches, observed, max_rows, progress)
    if feeds is None:
        feeds = layernorm_feeds(model, batches[0], [n for n in observed if n in fit])
    return reference, fit, held, feeds


def smooth_quant_(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    layers: Iterable[str] | None = None,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    weight_bits: int = 8,
    act_bits: int = 8,
    min_batches: int = 4,
    max_rows: int = 2048,
    progress: bool = True,
) -> dict[str, Smoothing]:
    """SQ-b with OPT-m, in place; returns the record per smoothed Linear (for `QuantPlan.with_smoothing`).

    Layers where no α beats leaving them alone are not touched and get no record. Calibrate the plan on
    the model *after* this pass: smoothing changes the ranges the observers must see.
    """
    batches = materialize_batches(batches, min_batches, "SQ-b calibration")
    was_training = model.training
    model.eval()
    try:
        names = check_targets(model, layers)
        reference, fit, held, feeds = held_out_stats(model, batches, names, max_rows, progress)
        groups: dict[str, list[str]] = defaultdict(list)
        for name in names:
            if name in fit and name in held:
                groups[feeds.get(name, name)].append(name)

        records: dict[str, Smoothing] = {}
        for key, members in track(list(groups.items()), description="OPT-m", transient=True, disable=not progress):
            weights = [model.get_submodule(m).weight for m in members]
            first = members[0]
            alpha = _choose_alpha(fit[first], held[first], weights, alphas, (weight_bits, act_bits))
            if alpha is None:
                continue
            scale, shift = smoothing_factors(_merged(fit[first], held[first]), weights, alpha)
            folded_into = key if key in feeds.values() else EXPLICIT
            for member in members:
                records[member] = Smoothing(
                    alpha=alpha, scale=scale.tolist(), shift=shift.tolist(), folded_into=folded_into
                )
        apply_smoothing_(model, records)
        check_identity(reference, model_outputs(model, batches[:1]))
    finally:
        model.train(was_training)
    return records


def check_identity(before: list[Tensor], after: list[Tensor]) -> None:
    """SQ-b is an fp32 identity; a violation means the graph analysis folded into a shared op (a bug)."""
    for b, a in zip(before, after, strict=True):
        err = (a - b).abs().max().item()
        magnitude = b.abs().max().item()
        if err > 1e-3 * max(magnitude, 1.0):
            raise RuntimeError(f"SQ-b changed the fp32 output (max abs diff {err:.3g}, magnitude {magnitude:.3g})")


@torch.no_grad()
def apply_smoothing_(model: nn.Module, records: dict[str, Smoothing]) -> nn.Module:
    """Fold SQ-b records into `model` in place; also replays a saved plan's smoothing on a new checkpoint."""
    by_target: dict[str, list[str]] = defaultdict(list)
    for name, record in records.items():
        by_target[record.folded_into if record.folded_into != EXPLICIT else f"{EXPLICIT}:{name}"].append(name)

    for target, members in by_target.items():
        first = records[members[0]]
        scale = torch.tensor(first.scale, dtype=torch.float64)
        shift = torch.tensor(first.shift, dtype=torch.float64)
        if any(records[m].scale != first.scale or records[m].shift != first.shift for m in members):
            raise QuantError(f"Linears fed by {target!r} must share one smoothing; the records disagree")
        for member in members:
            linear = model.get_submodule(member)
            if layer_kind(linear) != "linear" or isinstance(linear, SmoothedLinear):
                raise QuantError(f"cannot smooth {member!r}: it is {type(linear).__name__}, not a float nn.Linear")
            _fold_into_linear(linear, scale, shift)
        if target.startswith(f"{EXPLICIT}:"):
            name = members[0]
            smoothed = SmoothedLinear(model.get_submodule(name), ChannelAffine(shift.float(), (1.0 / scale).float()))
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, smoothed)
        else:
            ln = model.get_submodule(target)
            ln.weight.copy_((ln.weight.double() / scale).float())
            ln.bias.copy_(((ln.bias.double() - shift) / scale).float())
    return model


def _fold_into_linear(linear: nn.Linear, scale: Tensor, shift: Tensor) -> None:
    """W' = W·diag(s), b' = b + W·z: the Linear's half of the identity (computed in float64)."""
    w = linear.weight.double()
    bias = w @ shift
    if linear.bias is not None:
        linear.bias.copy_((linear.bias.double() + bias).float())
    else:
        linear.bias = nn.Parameter(bias.float())
    linear.weight.copy_((w * scale).float())
