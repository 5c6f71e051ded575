"""The quant pass: `QuantConfig` (method, bits, budget, reconstruction steps) and `apply`, which calibrates each
deploy unit on what it sees in use and plans its bits with the one recipe in `quant_recipe`.

Methods: `ptq` (min/max calibration, per-channel symmetric weights, per-tensor activations on Linear/Conv inputs),
`qhyvit` (Q-HyViT: BN folding, output-aware scale search, block-wise learned rounding with the hybrid's
conv→attention bridges reconstructed jointly) and `mptq` (MPTQ-ViT: SQ-b smoothing with a per-layer search of its
strength for the requested bits, then the same calibration). `bits = "mixed"` spends a budget where a per-layer
sensitivity table says it matters, over the weight widths every chosen target holds: `budget_mb` counts the bytes
each target really stores for a layer (`quant.cost`: integers, scales, zero points, palettes; the largest over the
targets, since one plan feeds them all), and is read back from every written artifact (the manifest's
`facts.quant.weight_bytes_written`); `budget_ms` with `device` counts milliseconds measured per layer and width on
that device's runtime (`edgevit.compress.bitsearch`, searched by `edgevit.compress.latency_search`), and the final
artifact is benched against it. 4-bit weights are planned on group-wise MSE grids (`four_bit_grid`); uniform
8-bit plans first scale the LayerNorm-fed Linears' inputs (AWQ, `quant_recipe.scale_for_8bit`), which narrows the
per-tensor 8-bit input grids that a few LayerNorm outlier channels set.
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
GROUP_SIZE = recipe.GROUP_SIZE_4BIT  # input columns per 4-bit scale in mixed plans


@dataclass(frozen=True)
class QuantConfig:
    """Quantize every deploy unit: `method`, weight `bits` (activations are 8-bit), a weight budget in MB
    (required by mixed unless `budget_ms` is given, a ceiling otherwise), Q-HyViT's learned-rounding steps per
    block, and a latency budget in ms measured on `device` (as `edgevit bench --device` names it; mixed only)."""

    kind: ClassVar[str] = "quant"
    method: str = "ptq"
    bits: str = "8"
    budget_mb: float | None = None
    recon_iters: int = QHYVIT_ITERS
    budget_ms: float | None = None
    device: str | None = None


def from_table(table: Mapping[str, Any], names: Names) -> QuantConfig:
    """A recipe file's `[[passes]]` table (`kind = "quant"` already read); `bits = 4` and `"4"` alike."""
    valid = [f.name for f in dataclasses.fields(QuantConfig)]
    unknown = [key for key in table if key not in valid]
    if unknown:
        raise EdgevitError(f"unknown key {names(unknown[0])}; valid keys of a quant pass: kind, {', '.join(valid)}")
    values = dict(table)
    if isinstance(values.get("bits"), int) and not isinstance(values["bits"], bool):
        values["bits"] = str(values["bits"])
    kinds = {
        "method": str,
        "bits": str,
        "budget_mb": (int, float),
        "recon_iters": int,
        "budget_ms": (int, float),
        "device": str,
    }
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, kinds[key]):
            raise EdgevitError(f"{names(key)} = {value!r} has the wrong type; see the README's Recipes section")
    for key in ("budget_mb", "budget_ms"):
        if key in values:
            values[key] = float(values[key])
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
    _check_latency(config, names)
    if config.bits == "mixed" and budget is None and config.budget_ms is None:
        raise EdgevitError(
            f"{n('bits')} mixed needs {n('budget_mb')} (the weight size the bits are allocated to fit) or "
            f"{n('budget_ms')} with {n('device')} (the latency measured there)"
        )


def _check_latency(config: QuantConfig, names: Names) -> None:
    """A latency budget needs a device, mixed bits and no second budget; a device needs a latency budget."""
    n, ms = names, config.budget_ms
    if ms is None:
        if config.device is not None:
            raise EdgevitError(f"{n('device')} is where {n('budget_ms')} is measured: give a budget, or drop it")
        return
    if not (ms > 0 and math.isfinite(ms)):
        raise EdgevitError(f"{n('budget_ms')} must be a positive number of milliseconds, got {ms}")
    if config.device is None:
        raise EdgevitError(f"{n('budget_ms')} needs {n('device')}: where to measure it (local, ssh:HOST, adb:SERIAL)")
    if config.bits != "mixed" or config.budget_mb is not None:
        raise EdgevitError(
            f"{n('budget_ms')} plans mixed precision under one budget: use {n('bits')} mixed without {n('budget_mb')}"
        )
    from benchmarks.devices import DeviceError, open_device

    try:
        open_device(config.device)
    except DeviceError as exc:
        raise EdgevitError(f"{n('device')}: {exc}") from None


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
    if config.budget_ms is not None and len(usable) != 1:
        raise EdgevitError(
            f"{names('budget_ms')} is measured on one runtime, and {', '.join(usable)} are {len(usable)}: give one "
            f"{names('targets')}"
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
        _check_budget(plan, config, data.targets)
        plan.metadata.update({"bits": config.bits})
        _explain(data, plan)
        return dataclasses.replace(unit, module=strip_fake_quant(fake_quant)), plan
    prepared = recipe.prepare(config.method, unit.module, calib, recipe.smoothing_bits(config.bits), data.bars)
    if config.bits == "mixed":  # check made a budget required
        plan = _mixed(unit, prepared, config, calib, data)
    else:
        grid = four_bit_grid(prepared, data.targets, calib) if config.bits == "4" else None
        scaled = recipe.scale_for_8bit(prepared, calib) if config.bits == "8" else None
        plan = recipe.uniform_plan(prepared, int(config.bits), 8)
        if grid is not None:
            plan.metadata["four_bit_grid"] = grid
        if scaled is not None:
            plan.metadata["awq"] = {"linears": scaled, "alpha_searched_for": "per-channel min-max 8-bit weights"}
        _check_budget(plan, config, data.targets)
        _explain(data, plan)
        if data.explain is not None and (grid is not None or scaled is not None):
            data.explain(f"4-bit grid: {grid}" if grid is not None else f"AWQ input scaling on {scaled} Linears")
    folded = [list(pair) for pair in prepared.bn_folded]
    plan.metadata.update({"method": config.method, "bits": config.bits, "bn_folded": folded})
    return dataclasses.replace(unit, module=prepared.module), plan


# Where each target's group-wise 4-bit lowering lives: a target without one keeps per-channel 4-bit grids.
def four_bit_grid(prepared: recipe.Prepared, targets: Sequence[str], calib: Sequence | None = None) -> str:
    """The one place mixed plans choose their 4-bit grid: group-wise symmetric scales, MSE-searched (weighted by
    each input column's E[x²]), for every Linear whose width divides into `GROUP_SIZE` groups, when every target
    lowers group-wise weights (the registry's `group_weights`); per-channel min-max otherwise. Given `calib`, the
    LayerNorm-fed Linears' input channels are first scaled for those groups (AWQ, `recipe.scale_inputs`:
    folded into the weights, nothing new to lower). Uniform `--bits 4` passes it (DINOv2-S W4A8 held-out
    25.8 → 27.4 dB); mixed plans do not: there it moved held-out SQNR by +0.9 / −4.1 / −2.7 dB at 60 / 70 / 80 %
    of W8A8's ExecuTorch bytes — the greedy allocation on its table lands erratically on the scaled model
    (benchmarks/results/quant_mixed.md). Returns which grid, for the plan's metadata."""
    from converters.targets.registry import target_info

    if all(target_info(t).group_weights for t in targets):
        scaled = recipe.scale_inputs(prepared, calib, 4, GROUP_SIZE) if calib is not None else 0
        prepared.stats.use_groups({4: GROUP_SIZE}, "mse")
        awq = f", AWQ input scaling on {scaled} Linears" if scaled else ""
        return f"group-wise ({GROUP_SIZE} columns), MSE scales{awq}"
    return "per-channel, min-max scales (a target here has no group-wise 4-bit lowering)"


def _mixed(unit: DeployUnit, prepared: recipe.Prepared, config: QuantConfig, calib: list, data: PassData) -> QuantPlan:
    """The mixed plan under the bytes budget (real per-target costs) or the latency measured on the device."""
    from quant.mixed_precision import allocate, bytes_budget, explain

    grid = four_bit_grid(prepared, data.targets)  # no AWQ here: it did not pay for mixed plans (see four_bit_grid)
    table = recipe.sensitivity(prepared, calib, weight_candidates(config, data.targets), data.bars)
    if config.budget_ms is not None:
        from edgevit.compress.latency_search import latency_plan

        assert config.device is not None  # check made the device required
        (target,) = data.targets
        plan = latency_plan(unit, prepared.module, prepared.stats, table, config.budget_ms, target, config.device)
    else:
        assert config.budget_mb is not None
        plan = allocate(prepared.stats, table, [bytes_budget(config.budget_mb, target_bytes(data.targets))])
        plan.metadata["budget_mb"] = config.budget_mb
    plan = plan.with_smoothing(prepared.smoothing)
    plan.metadata["four_bit_grid"] = grid
    if data.explain is not None:
        data.explain(explain(table, plan))
        if "latency" in plan.metadata:
            lat = plan.metadata["latency"]
            verdict = "within" if lat["measured_within_budget"] else "OVER"
            data.explain(
                f"latency on {lat['device']} ({lat['target']}): budget {lat['budget_ms']:.4g} ms, predicted "
                f"{lat['predicted_ms']:.4g} ms, measured {lat['measured_ms']:.4g} ms ({verdict} budget)"
            )
            if lat["floor"]:
                data.explain(f"floor: {lat['floor']}")
    return plan


def target_bytes(targets: Sequence[str]) -> Any:
    """A layer's cost as the bytes the most expensive of `targets` stores for it (one plan feeds them all); None
    where a target cannot hold its width."""
    from converters.quantized import WEIGHT_BITS
    from quant.cost import weight_bytes
    from quant.plan import LayerQuant

    def cost(layer: LayerQuant) -> float | None:
        sizes = [weight_bytes(layer, t, WEIGHT_BITS[t]) for t in targets]
        return None if any(s is None for s in sizes) else float(max(s for s in sizes if s is not None))

    return cost


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


def _check_budget(plan: QuantPlan, config: QuantConfig, targets: Sequence[str]) -> None:
    """A uniform plan's budget is a ceiling on what the targets really store (as `--bits mixed` counts it)."""
    if config.budget_mb is None:
        return
    cost = target_bytes(targets)
    held = sum(cost(layer) or 0.0 for layer in plan.layers.values())
    if held > config.budget_mb * 1e6:
        from quant.errors import QuantError

        raise QuantError(
            f"the W{config.bits} plan holds {held / 1e6:.3g} MB of quantized weights, over the {config.budget_mb:g} MB "
            f"budget (as {', '.join(targets)} store them): lower --bits or use --bits mixed"
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
