"""The quant pass: `QuantConfig` (method, bits, budget, reconstruction steps) and `apply`, which calibrates each
deploy unit on what it sees in use and plans its bits with the one recipe in `quant_recipe`.

Methods: `ptq` (min/max calibration, per-channel symmetric weights, per-tensor activations on Linear/Conv inputs),
`qhyvit` (Q-HyViT: BN folding, output-aware scale search, block-wise learned rounding with the hybrid's
conv→attention bridges reconstructed jointly) and `mptq` (MPTQ-ViT: SQ-b smoothing with a per-layer search of its
strength for the requested bits, then the same calibration). `bits = "mixed"` spends a weight budget where a
per-layer sensitivity table says it matters, over the weight widths every chosen target holds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from converters.unit import DeployUnit
from edgevit.errors import EdgevitError
from edgevit.pipeline.passes import quant_recipe as recipe
from edgevit.pipeline.passes.base import Names, Pass, PassData, PassRecord
from quant.plan import QuantPlan

METHODS = ("ptq", "qhyvit", "mptq")
BITS = ("8", "6", "4", "mixed")
QHYVIT_ITERS = 200  # learned-rounding steps per reconstruction block: most of the gain comes in the first 200


@dataclass(frozen=True)
class QuantConfig:
    """Quantize every deploy unit: `method`, weight `bits` (activations are 8-bit), a weight budget in MB
    (required by mixed, a ceiling otherwise) and Q-HyViT's learned-rounding steps per block."""

    kind: ClassVar[str] = "quant"
    method: str = "ptq"
    bits: str = "8"
    budget_mb: float | None = None
    recon_iters: int = QHYVIT_ITERS


def from_table(table: Mapping[str, Any], names: Names) -> QuantConfig:
    """A recipe file's `[[passes]]` table (`kind = "quant"` already read); `bits = 4` and `"4"` alike."""
    valid = [f.name for f in dataclasses.fields(QuantConfig)]
    unknown = [key for key in table if key not in valid]
    if unknown:
        raise EdgevitError(f"unknown key {names(unknown[0])}; valid keys of a quant pass: kind, {', '.join(valid)}")
    values = dict(table)
    if isinstance(values.get("bits"), int) and not isinstance(values["bits"], bool):
        values["bits"] = str(values["bits"])
    kinds = {"method": str, "bits": str, "budget_mb": (int, float), "recon_iters": int}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, kinds[key]):
            raise EdgevitError(f"{names(key)} = {value!r} has the wrong type; see the README's Recipes section")
    if "budget_mb" in values:
        values["budget_mb"] = float(values["budget_mb"])
    return QuantConfig(**values)


def check(config: QuantConfig, names: Names) -> None:
    """Refuse impossible settings before any slow work starts."""
    n = names
    if config.method not in METHODS:
        raise EdgevitError(f"unknown method {config.method!r}{n.where('method')}; valid: {', '.join(METHODS)}")
    if config.bits not in BITS:
        raise EdgevitError(f"unknown {n('bits')} {config.bits!r}; valid: {', '.join(BITS)}")
    budget = config.budget_mb
    if budget is not None and not (budget > 0 and math.isfinite(budget)):
        raise EdgevitError(f"{n('budget_mb')} must be a positive number of megabytes, got {budget}")
    if config.method == "qhyvit" and config.bits == "mixed":
        raise EdgevitError(
            f"{n('method')} qhyvit plans one bit-width for every layer; use {n('bits')} 8/6/4, or mptq for mixed"
        )
    if config.recon_iters < 1:
        raise EdgevitError(
            f"{n('recon_iters')} must be at least 1 (learned-rounding steps per block), got {config.recon_iters}"
        )
    if config.bits == "mixed" and budget is None:
        raise EdgevitError(f"{n('bits')} mixed needs {n('budget_mb')}: the weight size the bits are allocated to fit")


def usable_targets(
    config: QuantConfig, targets: tuple[str, ...], names: Names
) -> tuple[tuple[str, ...], dict[str, str]]:
    """The targets that hold the planned bits, and why the others are skipped; refuses when none can."""
    from converters.quantized import WEIGHT_BITS, held_bits

    holding = {t: sorted(_wanted(config) & set(WEIGHT_BITS[t])) for t in targets}
    usable = tuple(t for t in targets if holding[t] and (config.bits != "mixed" or len(holding[t]) > 1))
    if not usable:
        bits = config.bits
        what = (
            f"{bits}-bit weights"
            if bits != "mixed"
            else f"more than one weight width (needed by {names('bits')} mixed)"
        )
        holders = "; ".join(f"{t} holds {held_bits(t)}" for t in WEIGHT_BITS)
        raise EdgevitError(f"{names('targets')} {','.join(targets)} cannot hold {what}: {holders}")
    if config.bits == "mixed" and len(weight_candidates(config, usable)) < 2:
        shared = "/".join(map(str, weight_candidates(config, usable))) or "none"
        held = "; ".join(f"{t} holds {held_bits(t)}" for t in usable)
        raise EdgevitError(
            f"{names('bits')} mixed needs two weight widths every target holds, and {', '.join(usable)} share only "
            f"{shared} ({held}): quantize for one {names('targets')} at a time"
        )
    return usable, {t: f"holds {held_bits(t)}" for t in targets if t not in usable}


def _wanted(config: QuantConfig) -> set[int]:
    return {int(config.bits)} if config.bits != "mixed" else {4, 6, 8}


def weight_candidates(config: QuantConfig, targets: Sequence[str]) -> tuple[int, ...]:
    """One plan feeds every target: mixed precision may use only the widths all of them hold."""
    from converters.quantized import WEIGHT_BITS

    return tuple(sorted(set.intersection(_wanted(config), *(set(WEIGHT_BITS[t]) for t in targets))))


def plan_unit(unit: DeployUnit, config: QuantConfig, calib: list, data: PassData) -> tuple[DeployUnit, QuantPlan]:
    """Calibrate `unit` and return it as it must be lowered (folded and smoothed, or reconstructed) with its plan."""
    if config.method == "qhyvit":
        from quant.fake_quant import strip_fake_quant

        fake_quant, plan = recipe.qhyvit(
            unit.module, calib, int(config.bits), 8, iters=config.recon_iters, bars=data.bars
        )
        _check_budget(plan, config)
        plan.metadata.update({"bits": config.bits})
        _explain(data, plan)
        return dataclasses.replace(unit, module=strip_fake_quant(fake_quant)), plan
    prepared = recipe.prepare(config.method, unit.module, calib, recipe.smoothing_bits(config.bits), data.bars)
    if config.bits == "mixed" and config.budget_mb is not None:  # check made the budget required
        from quant.mixed_precision import explain

        table = recipe.sensitivity(prepared, calib, weight_candidates(config, data.targets), data.bars)
        plan = recipe.mixed_plan(prepared, table, config.budget_mb)
        if data.explain is not None:
            data.explain(explain(table, plan))
    else:
        plan = recipe.uniform_plan(prepared, int(config.bits), 8)
        _check_budget(plan, config)
        _explain(data, plan)
    folded = [list(pair) for pair in prepared.bn_folded]
    plan.metadata.update({"method": config.method, "bits": config.bits, "bn_folded": folded})
    return dataclasses.replace(unit, module=prepared.module), plan


def apply(units: Sequence[DeployUnit], config: QuantConfig, data: PassData) -> tuple[list[DeployUnit], PassRecord]:
    """Plan every unit on its calibration inputs; the record is the manifest's `quant` section and the plans."""
    planned, plans = [], {}
    for unit in units:
        unit, plans[unit.name] = plan_unit(unit, config, data.batches[unit.name].calib, data)
        planned.append(unit)
    info = {
        "method": config.method,
        "bits": config.bits,
        "budget_mb": config.budget_mb,
        "calibration": data.calibration,
    }
    return planned, PassRecord(QuantConfig.kind, info, plans)


def _check_budget(plan: QuantPlan, config: QuantConfig) -> None:
    if config.budget_mb is not None and plan.weight_bytes() > config.budget_mb * 1e6:
        from quant.errors import QuantError

        raise QuantError(
            f"the W{config.bits} plan holds {plan.weight_bytes() / 1e6:.3g} MB of quantized weights, over the "
            f"{config.budget_mb:g} MB budget: lower --bits or use --bits mixed"
        )


def _explain(data: PassData, plan: QuantPlan) -> None:
    if data.explain is not None:
        data.explain(plan_table(plan))


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


QUANT = Pass(
    kind=QuantConfig.kind,
    config=QuantConfig,
    apply=apply,
    from_table=from_table,
    check=check,
    targets=usable_targets,
    needs_data=True,
)
