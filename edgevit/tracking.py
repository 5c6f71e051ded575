"""Assemble a tracker from a registered model (eager units) or from a converted bundle's artifacts."""

from __future__ import annotations

from pathlib import Path

from edgevit.errors import EdgevitError
from edgevit.models.efficienttam.tracker import Tracker


def eager_tracker(model) -> Tracker:
    units = {u.name: u for u in model.deploy_units()}
    return Tracker(model.cfg, {name: unit.run_eager for name, unit in units.items()})


def make_tracker(
    model_name: str, variant: str | None, checkpoint: Path | None, bundle: Path | None, target: str | None
) -> tuple[Tracker, dict]:
    from edgevit.models import create, resolve

    if bundle is not None:
        raise EdgevitError(
            "--bundle tracking needs a converted bundle; `edgevit convert` is not available yet"
        )
    fam, variant = resolve(model_name, variant)
    if fam.name != "efficienttam":
        raise EdgevitError(f"model {fam.name!r} does not track video; use efficienttam")
    model = create(fam.name, variant, checkpoint=checkpoint)
    source = {
        "model": f"{fam.name}_{variant}",
        "runtime": "eager torch",
        "weights": "checkpoint" if checkpoint else "random",
    }
    return eager_tracker(model), source
