"""`run(recipe)`: build the model, apply the recipe's passes to its deploy units, lower them for every target and
write the bundle (with the recipe that made it as `recipe.toml`); returns the manifest.

Every check that needs no model runs first, then the output folder is claimed, so a mistake costs nothing and a
failure leaves nothing behind. Commands and suites call this; it never prints (a `Progress` reports).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from edgevit.errors import EdgevitError
from edgevit.pipeline import passes
from edgevit.pipeline.recipe import Recipe

RECIPE_FILE = "recipe.toml"


class Progress:
    """What a run reports as it goes; this one says nothing. Commands override what they show."""

    bars = False  # let calibration, SQ-b and sensitivity draw their own progress bars

    def skipped(self, target: str, why: str) -> None:
        """A target left out because it cannot hold what a pass made (e.g. 4-bit weights)."""

    def weights(self, origin: str) -> None:
        """Where the model's weights came from: "checkpoint", "random", or what an imported model says."""

    def explain(self, renderable: Any) -> None:
        """A pass's own account (a plan, a sensitivity table); shown only when asked for."""

    def artifact(self, unit: str, target: str, done: int, total: int) -> None:
        """About to lower `unit` for `target`; `done` of `total` artifacts are written."""

    @contextlib.contextmanager
    def lowering(self, total: int) -> Iterator[Path | None]:
        """Around the lowering of `total` artifacts; may yield a log file of the backends' output, which the
        bundle keeps as `convert.log` (a command redirects the backends' chatter there)."""
        yield None


@dataclass(frozen=True)
class Checked:
    """A recipe that passed every check that needs no model: its targets and the ones a pass skips."""

    recipe: Recipe
    targets: tuple[str, ...]
    kept: tuple[str, ...]
    skipped: dict[str, str]
    toml: str


def check(recipe: Recipe) -> Checked:
    """Every check that needs no model: values, targets, what the targets can hold, the recipe's TOML."""
    from converters import ConversionError, resolve_targets

    try:
        recipe.check()
        targets = resolve_targets(",".join(recipe.targets))
        kept, skipped = targets, {}
        for i, config in enumerate(recipe.passes):
            handler = passes.pass_for(config)
            if handler.targets is not None:
                kept, more = handler.targets(config, kept, recipe.names(i))
                skipped.update(more)
        toml = recipe.resolved(targets).to_toml()
    except (EdgevitError, ConversionError) as exc:
        if recipe.source is None:
            raise
        raise EdgevitError(f"{recipe.source}: {exc}") from None
    except (TypeError, ValueError) as exc:  # tomli_w: a `--set` value TOML cannot hold (None, an object)
        raise EdgevitError(f"the recipe cannot be written as TOML ({exc}); --set numbers, strings or lists") from None
    return Checked(recipe, targets, kept, skipped, toml)


def build_model(recipe: Recipe) -> nn.Module:
    """The recipe's model: its checkpoint loaded strictly, or random weights drawn from `recipe.seed` (without
    touching the caller's random state), so a recipe rebuilds the same bundle."""
    import torch

    from edgevit.models import create

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        return create(recipe.model, recipe.variant, checkpoint=recipe.checkpoint, **dict(recipe.overrides))


def run(recipe: Recipe, *, out: Path, force: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """Build `recipe` into the bundle `out` (replacing an edgevit output there only with `force`) and return its
    manifest; `progress` hears what happens."""
    from edgevit.bundle import weights_origin

    progress = progress or Progress()
    checked = _claim(recipe, out, force, progress)
    model = build_model(recipe)
    progress.weights(weights_origin(model, recipe.checkpoint))
    return _execute(model, checked, out, force, progress)


def run_model(
    model: nn.Module,
    recipe: Recipe,
    *,
    out: Path,
    force: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """`run` on a model the caller built (e.g. with a bias raised for a benchmark): the recipe still names the
    model, passes and targets, and is recorded as given (the caller vouches that it describes `model`)."""
    progress = progress or Progress()
    return _execute(model, _claim(recipe, out, force, progress), out, force, progress)


def _claim(recipe: Recipe, out: Path, force: bool, progress: Progress) -> Checked:
    from converters.bundle import check_out

    checked = check(recipe)
    data_path = None
    if any(passes.pass_for(c).needs_data for c in recipe.passes) and recipe.calibration != "builtin":
        data_path = recipe.calibration
    check_out(out, force, inputs=[recipe.checkpoint, data_path, recipe.source])
    for target, why in checked.skipped.items():
        progress.skipped(target, why)
    return checked


def _execute(model: nn.Module, checked: Checked, out: Path, force: bool, progress: Progress) -> dict[str, Any]:
    from converters.bundle import PassEntry
    from edgevit.bundle import QuantizedUnit, write_bundle, write_quant_bundle

    recipe, targets = checked.recipe, checked.kept
    units = model.deploy_units()
    data = passes.PassData(targets, explain=progress.explain, bars=progress.bars)
    records = []
    for config in recipe.passes:
        if passes.pass_for(config).needs_data and not data.batches:
            data.batches, data.calibration = _unit_data(model, recipe.calibration)
        units, record = passes.apply(units, config, data)
        records.append(record)
    total = len(units) * len(targets)
    done = iter(range(total))

    def step(unit: str, target: str) -> None:
        progress.artifact(unit, target, next(done), total)

    files = {RECIPE_FILE: checked.toml}
    entries = tuple(PassEntry(r.kind, r.info) for r in records)
    plans = {name: plan for record in records for name, plan in record.plans.items()}
    with progress.lowering(total) as log:
        if not plans:
            return write_bundle(
                model, targets, recipe.precision, out, force, step, log,
                files=files, units=units, checkpoint=recipe.checkpoint, passes=entries,
            )  # fmt: skip
        info = {**next(r.info for r in records if r.plans), "skipped_targets": checked.skipped}
        planned = [QuantizedUnit(u, plans[u.name], data.batches[u.name].held_out) for u in units]
        return write_quant_bundle(
            model, planned, targets, out, info, force, step,
            files=files, log=log, checkpoint=recipe.checkpoint, passes=entries,
        )  # fmt: skip


def _unit_data(model: nn.Module, source: str):
    from edgevit.unit_data import unit_batches

    found, calibration = unit_batches(model, source)
    return {b.unit.name: b for b in found}, calibration
