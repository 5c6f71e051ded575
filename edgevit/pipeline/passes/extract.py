"""The matformer pass: Mix'n'Match extraction of a MatViT sub-model under a parameter or latency budget.

`MatFormerConfig` names the budget (millions of parameters, or milliseconds measured through ONNX Runtime on
this machine) and the labelled images the candidates are scored on ("builtin": the digits' held-out part, or a
folder with one sub-folder per class); `apply` chooses one MLP width per block (`edgevit.compress.matformer`)
and replaces the unit's MatViT with the extracted dense ViT: smaller weight matrices, same outputs as the
nested model at those widths. The later passes and every target see an ordinary ViT.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from converters.unit import DeployUnit
from edgevit.errors import EdgevitError
from edgevit.pipeline.passes.base import Names, Pass, PassData, PassRecord


@dataclass(frozen=True)
class MatFormerConfig:
    """Extract the best Mix'n'Match sub-model within `budget_mparams` (millions of parameters) or `budget_ms`
    (ONNX Runtime latency here, one thread), scored on `data`; `max_candidates` bounds the heuristic's set."""

    kind: ClassVar[str] = "matformer"
    budget_mparams: float | None = None
    budget_ms: float | None = None
    data: str = "builtin"
    max_candidates: int = 12


def from_table(table: Mapping[str, Any], names: Names) -> MatFormerConfig:
    """A recipe file's `[[passes]]` table (`kind = "matformer"` already read)."""
    valid = [f.name for f in dataclasses.fields(MatFormerConfig)]
    unknown = [key for key in table if key not in valid]
    if unknown:
        raise EdgevitError(f"unknown key {names(unknown[0])}; valid keys of a matformer pass: kind, {', '.join(valid)}")
    kinds = {"budget_mparams": (int, float), "budget_ms": (int, float), "data": str, "max_candidates": int}
    values = dict(table)
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, kinds[key]):
            raise EdgevitError(f"{names(key)} = {value!r} has the wrong type; see the README's MatFormer section")
    for key in ("budget_mparams", "budget_ms"):
        if key in values:
            values[key] = float(values[key])
    return MatFormerConfig(**values)


def check(config: MatFormerConfig, names: Names) -> None:
    """Exactly one positive budget, and a sane candidate count."""
    budgets = {k: getattr(config, k) for k in ("budget_mparams", "budget_ms") if getattr(config, k) is not None}
    if len(budgets) != 1:
        raise EdgevitError(
            f"a matformer pass needs exactly one budget: {names('budget_mparams')} or {names('budget_ms')}"
        )
    ((key, value),) = budgets.items()
    if not (value > 0 and math.isfinite(value)):
        raise EdgevitError(f"{names(key)} must be a positive number, got {value}")
    if config.max_candidates < 1:
        raise EdgevitError(f"{names('max_candidates')} must be at least 1, got {config.max_candidates}")


def apply(units: Sequence[DeployUnit], config: MatFormerConfig, data: PassData) -> tuple[list[DeployUnit], PassRecord]:
    """Choose per-block widths on held-out labelled images and swap the MatViT for the extracted ViT."""
    from edgevit.compress.matformer import LatencyModel, mix_n_match
    from edgevit.data.labelled import load_labelled
    from edgevit.models.matvit import MatViT

    if len(units) != 1 or not isinstance(units[0].module, MatViT):
        what = ", ".join(type(u.module).__name__ for u in units)
        raise EdgevitError(f"the matformer pass extracts from a matvit model (--model matvit), not {what}")
    unit = units[0]
    model: MatViT = unit.module
    held_out = load_labelled(config.data, model.spec).select
    if model.cfg.num_classes and int(held_out.labels.max()) >= model.cfg.num_classes:
        raise EdgevitError(f"the data {config.data!r} has more classes than the model's {model.cfg.num_classes}")
    latency = None
    if config.budget_mparams is not None:
        budget, unit_name = config.budget_mparams, "M params"

        def cost(levels: Sequence[int]) -> float:
            return model.parameter_count(list(levels)) / 1e6

    else:
        budget, unit_name = config.budget_ms, "ms"
        cost = latency = LatencyModel(model)
    found = mix_n_match(
        model, budget, cost, held_out, max_candidates=config.max_candidates, describe=lambda v: f"{v:.4g} {unit_name}"
    )
    chosen, measured_ms = found[0], None
    if latency is not None:
        chosen, measured_ms = _measured_fit(model, found, budget)
    sub = model.extract(list(chosen.levels))
    full_loss_acc = _full_score(model, held_out)
    info = {
        "method": "mix_n_match",
        "budget_mparams": config.budget_mparams,
        "budget_ms": config.budget_ms,
        "data": config.data,
        "selection_images": len(held_out),
        "levels": list(chosen.levels),
        "granularities": [model.cfg.granularities[g] for g in chosen.levels],
        "hidden_widths": [model.cfg.hidden_widths[g] for g in chosen.levels],
        "params": model.parameter_count(list(chosen.levels)),
        "full_params": model.parameter_count(len(model.cfg.granularities) - 1),
        "selection_loss": chosen.loss,
        "selection_accuracy": chosen.accuracy,
        "full_selection_loss": full_loss_acc[0],
        "full_selection_accuracy": full_loss_acc[1],
        "measured_ms": measured_ms,
        "latency_model_uniform_ms": None if latency is None else latency.uniform,
        "candidates": [c.to_dict() for c in found],
    }
    return [dataclasses.replace(unit, module=sub)], PassRecord(MatFormerConfig.kind, info)


def _full_score(model: Any, held_out: Any) -> tuple[float, float]:
    from edgevit.compress.matformer import score

    before = model.granularity
    try:
        return score(model, (len(model.cfg.granularities) - 1,) * model.cfg.depth, held_out)
    finally:
        model.set_granularity(before)


def _measured_fit(model: Any, found: Sequence[Any], budget: float) -> tuple[Any, float]:
    """The best candidate whose measured latency fits: the fit ranked them, a timing decides. The three best
    by held-out loss are tried, then the cheapest; beyond that the fit is too far off to keep guessing."""
    from edgevit.compress.matformer import measure_ms

    cheapest = min(found, key=lambda c: c.cost)
    timed = []
    for candidate in [*found[:3], cheapest]:
        ms = measure_ms(model.extract(list(candidate.levels)))
        if ms <= budget:
            return candidate, ms
        timed.append(f"{list(candidate.levels)}: {ms:.3g} ms")
    raise EdgevitError(
        f"no sub-model measured within {budget:g} ms on this machine ({'; '.join(timed)}); raise --budget-ms"
    )


MATFORMER = Pass(
    kind=MatFormerConfig.kind,
    config=MatFormerConfig,
    apply=apply,
    from_table=from_table,
    check=check,
)
