"""The prune pass: `PruneConfig` (score, budget, what the budget counts, recovery steps, which units) and
`apply`, which prunes every deploy unit that has transformer blocks in place (`edgevit.compress.prune`), so
later passes, the bundle and the tracker all run the smaller module.

EfficientTAM's only prunable unit is its image encoder; a model with no ViT-style block is refused.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from converters.unit import DeployUnit
from edgevit.compress.prune.prune_module import BY, SCORES
from edgevit.errors import EdgevitError
from edgevit.pipeline.passes.base import Names, Pass, PassData, PassRecord

_FLAGS = {"budget": "--prune", "score": "--prune-score", "by": "--prune-by"}  # flags not named after their key


@dataclass(frozen=True)
class PruneConfig:
    """Remove `budget` (a fraction in (0, 1)) of each prunable unit's parameters, FLOPs or latency measured
    through ONNX Runtime here (`by`), ranking heads
    and MLP channels by `score`, then `recover_steps` steps of distillation from the unpruned unit; `units`
    restricts the pass to the deploy units named (None: every unit with transformer blocks)."""

    kind: ClassVar[str] = "prune"
    budget: float = 0.3
    score: str = "activation"
    by: str = "params"
    recover_steps: int = 0
    units: tuple[str, ...] | None = None


def _name(names: Names, key: str) -> str:
    return _FLAGS.get(key, names(key)) if names.prefix is None else names(key)


def from_table(table: Mapping[str, Any], names: Names) -> PruneConfig:
    """A recipe file's `[[passes]]` table (`kind = "prune"` already read)."""
    valid = [f.name for f in dataclasses.fields(PruneConfig)]
    unknown = [key for key in table if key not in valid]
    if unknown:
        raise EdgevitError(f"unknown key {names(unknown[0])}; valid keys of a prune pass: kind, {', '.join(valid)}")
    kinds = {"budget": (int, float), "score": str, "by": str, "recover_steps": int, "units": list}
    values = dict(table)
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, kinds[key]):
            raise EdgevitError(f"{names(key)} = {value!r} has the wrong type; see the README's Pruning section")
    if "units" in values:
        if not all(isinstance(u, str) for u in values["units"]):
            raise EdgevitError(f'{names("units")} must be a list of deploy-unit names, e.g. ["image_encoder"]')
        values["units"] = tuple(values["units"])
    if "budget" in values:
        values["budget"] = float(values["budget"])
    return PruneConfig(**values)


def check(config: PruneConfig, names: Names) -> None:
    """Refuse impossible settings before any slow work starts."""
    if not 0.0 < config.budget < 1.0:
        raise EdgevitError(
            f"{_name(names, 'budget')} {config.budget:g} is not a fraction in (0, 1): give the share of "
            f"{config.by} to remove, e.g. 0.3"
        )
    if config.score not in SCORES:
        raise EdgevitError(f"unknown {_name(names, 'score')} {config.score!r}; valid: {', '.join(SCORES)}")
    if config.by not in BY:
        raise EdgevitError(f"unknown {_name(names, 'by')} {config.by!r}; valid: {', '.join(BY)}")
    if config.recover_steps < 0:
        raise EdgevitError(f"{_name(names, 'recover_steps')} must be ≥ 0 (Adam steps), got {config.recover_steps}")
    if config.units is not None and not config.units:
        raise EdgevitError(f"{_name(names, 'units')} is empty; leave it out to prune every prunable unit")


def apply(units: Sequence[DeployUnit], config: PruneConfig, data: PassData) -> tuple[list[DeployUnit], PassRecord]:
    """Prune each chosen unit's module in place on its calibration inputs; the record holds, per unit, the
    parameters and FLOPs before and after, what each block kept and the fidelity on held-out inputs."""
    from edgevit.compress.prune import BudgetError, PruneSettings, fidelity_db, outputs, prunable_blocks, prune_module

    names = {u.name for u in units}
    missing = sorted(set(config.units or ()) - names)
    if missing:
        raise EdgevitError(f"prune units {missing} are not deploy units of this model; its units: {sorted(names)}")
    chosen = [u for u in units if (config.units is None or u.name in config.units) and prunable_blocks(u.module)]
    if not chosen:
        raise EdgevitError(
            f"no deploy unit ({', '.join(sorted(names))}) has transformer blocks to prune: prune a ViT "
            "(vit, dinov2_s_focus) or efficienttam"
        )
    settings = PruneSettings(config.budget, config.score, config.by, config.recover_steps)
    found = {}
    for unit in chosen:
        batches = data.batches[unit.name]
        reference = outputs(unit.module, batches.held_out)
        try:
            report = prune_module(unit.module, settings, batches.calib, latency=_timer(unit, config))
        except BudgetError as exc:
            raise EdgevitError(
                f"prune budget {config.budget:g} removes more {config.by} than unit {unit.name!r} can lose (at most "
                f"{exc.most:.3f}: every block keeps a head and some MLP channels); give --prune (a recipe's budget) "
                f"at most {math.floor(exc.most * 100) / 100:.2f}"
            ) from None
        info = report.to_json()
        sqnr = fidelity_db(reference, outputs(unit.module, batches.held_out))
        info["fidelity_sqnr_db"] = sqnr if math.isfinite(sqnr) else None  # inf: nothing changed
        info["held_out"] = len(batches.held_out)
        found[unit.name] = info
    record = {"score": config.score, "budget": config.budget, "by": config.by, "units": found}
    return list(units), PassRecord(PruneConfig.kind, record)


def _timer(unit: DeployUnit, config: PruneConfig):
    """By latency: a pruned copy of the unit's module timed through ONNX Runtime here (one thread, cached)."""
    if config.by != "latency":
        return None
    from edgevit.compress.latency import unit_ms

    return lambda module: unit_ms(dataclasses.replace(unit, module=module))


PRUNE = Pass(
    kind=PruneConfig.kind,
    config=PruneConfig,
    apply=apply,
    from_table=from_table,
    check=check,
    needs_data=True,
)
