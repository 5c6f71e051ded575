"""`edgevit quantize` (and `edgevit convert --quant`): calibrate on real data, plan the bits, and write
low-bit artifacts in a bundle.

Methods: `ptq` (min/max calibration, per-channel symmetric weights, per-tensor activations on Linear/Conv
inputs only), `qhyvit` (Q-HyViT: BN folding, output-aware scale/granularity/scheme search, block-wise
learned rounding with the hybrid's conv→attention bridges reconstructed jointly) and `mptq` (MPTQ-ViT: SQ-b
smoothing with a per-layer search of its strength, then the same calibration). `--bits mixed` spends a
weight budget (`--budget-mb`) where a per-layer sensitivity table says it matters, over the weight widths
the chosen targets can hold. Every deploy unit is calibrated on what it sees in use (`edgevit.unit_data`):
EfficientTAM's memory and decoder units on inputs recorded while the model tracks real frames.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from converters.unit import DeployUnit
from edgevit.errors import EdgevitError
from quant.plan import QuantPlan

METHODS = ("ptq", "qhyvit", "mptq")
BITS = ("8", "6", "4", "mixed")
QHYVIT_ITERS = 200  # learned-rounding steps per reconstruction block: most of the gain comes in the first 200
SENSITIVITY_IMAGES = 4  # per-layer probes for mixed precision: layers x bit-widths forward passes each


@dataclass(frozen=True)
class QuantRequest:
    """What the user asked for, validated before any slow work starts."""

    method: str
    bits: str
    budget_mb: float | None
    calib: str
    targets: tuple[str, ...]
    skipped: dict[str, str]
    weight_candidates: tuple[int, ...]
    recon_iters: int = QHYVIT_ITERS


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """`--set key=value` pairs as config overrides; values are Python literals, else strings."""
    found = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise EdgevitError(f"--set {pair!r} is not KEY=VALUE (e.g. --set depth=2)")
        try:
            found[key.strip()] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            found[key.strip()] = raw
    return found


def check_request(
    method: str, bits: str, budget_mb: float | None, calib: str, target: str, recon_iters: int = QHYVIT_ITERS
) -> QuantRequest:
    """Reject impossible combinations up front, naming which target holds which bits."""
    from converters import resolve_targets
    from converters.quantized import WEIGHT_BITS, held_bits

    if method not in METHODS:
        raise EdgevitError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if bits not in BITS:
        raise EdgevitError(f"unknown --bits {bits!r}; valid: {', '.join(BITS)}")
    if budget_mb is not None and not (budget_mb > 0 and math.isfinite(budget_mb)):
        raise EdgevitError(f"--budget-mb must be a positive number of megabytes, got {budget_mb}")
    if method == "qhyvit" and bits == "mixed":
        raise EdgevitError("--method qhyvit plans one bit-width for every layer; use --bits 8/6/4, or mptq for mixed")
    if recon_iters < 1:
        raise EdgevitError(f"--recon-iters must be at least 1 (learned-rounding steps per block), got {recon_iters}")
    if bits == "mixed" and budget_mb is None:
        raise EdgevitError("--bits mixed needs --budget-mb: the weight size the bits are allocated to fit")
    targets = resolve_targets(target)
    wanted = {int(bits)} if bits != "mixed" else {4, 6, 8}
    holding = {t: sorted(wanted & set(WEIGHT_BITS[t])) for t in targets}
    usable = [t for t in targets if holding[t] and (bits != "mixed" or len(holding[t]) > 1)]
    if not usable:
        what = f"{bits}-bit weights" if bits != "mixed" else "more than one weight width (needed by --bits mixed)"
        holders = "; ".join(f"{t} holds {held_bits(t)}" for t in WEIGHT_BITS)
        raise EdgevitError(f"--target {target} cannot hold {what}: {holders}")
    skipped = {t: f"holds {held_bits(t)}" for t in targets if t not in usable}
    # One plan feeds every target: mixed precision may use only the widths all of them hold.
    candidates = tuple(sorted(set.intersection(*(set(holding[t]) for t in usable))))
    if bits == "mixed" and len(candidates) < 2:
        held = "; ".join(f"{t} holds {held_bits(t)}" for t in usable)
        raise EdgevitError(
            f"--bits mixed needs two weight widths every target holds, and {', '.join(usable)} share only "
            f"{'/'.join(map(str, candidates)) or 'none'} ({held}): quantize for one --target at a time"
        )
    return QuantRequest(method, bits, budget_mb, calib, tuple(usable), skipped, candidates, recon_iters)


def plan_unit(
    unit: DeployUnit,
    request: QuantRequest,
    calib: list[tuple[torch.Tensor, ...]],
    explain_to: Callable[[Any], None] | None,
) -> tuple[DeployUnit, QuantPlan]:
    """Calibrate `unit` and return it as it must be lowered (smoothed or reconstructed) with its plan."""
    if request.method == "qhyvit":
        return _qhyvit_unit(unit, request, calib, explain_to)
    import dataclasses

    from quant.bn_fold import fold_batchnorm
    from quant.fake_quant import collect_stats
    from quant.metrics import layer_sensitivity
    from quant.mixed_precision import explain, greedy_allocate
    from quant.smoothquant import smooth_quant_

    # Every backend folds BatchNorm into the conv before it quantizes; the plan must grid the folded weights.
    module, folded = fold_batchnorm(unit.module, calib[0])
    unit = dataclasses.replace(unit, module=module)
    records = smooth_quant_(module, calib) if request.method == "mptq" else {}
    stats = collect_stats(module, calib)
    if request.bits == "mixed" and request.budget_mb is not None:  # check_request made the budget required
        table = layer_sensitivity(
            module, stats, calib[:SENSITIVITY_IMAGES], weight_bits=request.weight_candidates, act_bits=(8,)
        )
        plan = greedy_allocate(stats, table, request.budget_mb)
        if explain_to is not None:
            explain_to(explain(table, plan))
    else:
        plan = stats.plan(int(request.bits), 8, method="ptq")
        _check_budget(plan, request)
        if explain_to is not None:
            explain_to(plan_table(plan))
    plan = plan.with_smoothing(records)
    plan.metadata.update({"method": request.method, "bits": request.bits, "bn_folded": [list(p) for p in folded]})
    return unit, plan


def _qhyvit_unit(
    unit: DeployUnit,
    request: QuantRequest,
    calib: list[tuple[torch.Tensor, ...]],
    explain_to: Callable[[Any], None] | None,
) -> tuple[DeployUnit, QuantPlan]:
    """Q-HyViT on one unit: the lowered module is the BN-folded float copy with reconstructed, on-grid weights."""
    import dataclasses

    from quant.fake_quant import strip_fake_quant
    from quant.qhyvit import bridges_of, qhyvit_quantize

    bridges = bridges_of(unit.module)
    fake_quant, plan = qhyvit_quantize(unit.module, calib, bridges, int(request.bits), 8, iters=request.recon_iters)
    _check_budget(plan, request)
    plan.metadata.update({"bits": request.bits})
    if explain_to is not None:
        explain_to(plan_table(plan))
    return dataclasses.replace(unit, module=strip_fake_quant(fake_quant)), plan


def _check_budget(plan: QuantPlan, request: QuantRequest) -> None:
    if request.budget_mb is not None and plan.weight_bytes() > request.budget_mb * 1e6:
        from quant.errors import QuantError

        raise QuantError(
            f"the W{request.bits} plan holds {plan.weight_bytes() / 1e6:.3g} MB of quantized weights, over the "
            f"{request.budget_mb:g} MB budget: lower --bits or use --bits mixed"
        )


def plan_table(plan: QuantPlan) -> Any:
    """A plan as a rich table: one row per layer with its bits and the range its grid covers."""
    from rich.table import Table

    table = Table(title=f"quantization plan: {len(plan.layers)} layers, {plan.weight_bytes() / 1e6:.4g} MB weights")
    for col in ("layer", "kind", "method", "weights", "act", "activation range"):
        table.add_column(col)
    for layer in plan.layers.values():
        q = layer.inputs[0]
        lo = (q.quant_min - q.zero_point[0]) * q.scale[0]
        hi = (q.quant_max - q.zero_point[0]) * q.scale[0]
        weight = f"W{layer.weight_bits}" if layer.weight is not None else "-"
        table.add_row(layer.name, layer.kind, layer.method, weight, f"A{layer.act_bits}", f"[{lo:.3g}, {hi:.3g}]")
    return table


def quantize_model(
    model: nn.Module,
    request: QuantRequest,
    out: Path,
    *,
    force: bool = False,
    explain_to: Callable[[Any], None] | None = None,
    on_artifact: Callable[[str, str], None] | None = None,
) -> dict[str, Any]:
    """Calibrate, plan and lower every unit of `model`; write the bundle to `out` and return its manifest."""
    from edgevit.bundle import QuantizedUnit, write_quant_bundle
    from edgevit.unit_data import unit_batches

    # Each unit is planned on a BN-folded copy (and smoothed there for mptq): the caller's model stays as it is.
    batches, calibration = unit_batches(model, request.calib)
    prepared = []
    for found in batches:
        unit, plan = plan_unit(found.unit, request, found.calib, explain_to)
        prepared.append(QuantizedUnit(unit, plan, found.held_out))
    info = {
        "method": request.method,
        "bits": request.bits,
        "budget_mb": request.budget_mb,
        "calibration": calibration,
        "skipped_targets": request.skipped,
    }
    return write_quant_bundle(model, prepared, request.targets, out, info, force, on_artifact)


def quantize(
    model_name: str,
    variant: str | None,
    checkpoint: Path | None,
    overrides: Sequence[str],
    method: str,
    bits: str,
    budget_mb: float | None,
    calib: str,
    target: str,
    explain: bool,
    out: Path,
    force: bool,
    as_json: bool,
    recon_iters: int = QHYVIT_ITERS,
) -> None:
    from rich.console import Console

    from converters.bundle import check_out
    from edgevit.bundle import weights_origin
    from edgevit.commands.inspect import print_table
    from edgevit.models import create

    console = Console(stderr=True)
    request = check_request(method, bits, budget_mb, calib, target, recon_iters)
    check_out(out, force, inputs=[checkpoint, None if calib == "builtin" else calib])
    model = create(model_name, variant, checkpoint=checkpoint, **parse_overrides(overrides))
    if weights_origin(model) == "random":
        console.print(
            "[bold yellow]note: no --checkpoint: these weights are RANDOM (files are valid, outputs meaningless)[/]"
        )
    for skipped, why in request.skipped.items():
        console.print(f"[yellow]skipping {skipped}: it {why}[/]")

    def step(unit: str, tgt: str) -> None:
        console.print(f"lowering {unit} → {tgt}")

    # Calibration, SQ-b and sensitivity draw their own progress bars (one live display at a time).
    manifest = quantize_model(
        model, request, out, force=force, explain_to=console.print if explain else None, on_artifact=step
    )
    if as_json:
        print(json.dumps(manifest, indent=2))
    else:
        print_table(manifest, out)
