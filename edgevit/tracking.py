"""Assemble a tracker from a registered model (eager units) or from a converted bundle's artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgevit.errors import EdgevitError
from edgevit.models.efficienttam.tracker import UNIT_NAMES, Tracker


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks; two empty masks agree fully (check areas first)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def eager_tracker(model) -> Tracker:
    units = {u.name: u for u in model.deploy_units()}
    return Tracker(model.cfg, {name: unit.run_eager for name, unit in units.items()})


def bundle_tracker(bundle: Path, target: str | None, num_threads: int | None = None) -> tuple[Tracker, dict]:
    """Drive a converted bundle's units: the same loop, another runtime, so masks can be compared."""
    from edgevit.bundle import artifact_for, read_manifest, unit_runner
    from edgevit.models.efficienttam.config import EfficientTAMConfig

    manifest = read_manifest(bundle)
    model = manifest["model"]
    if model["name"] != "efficienttam" or not model.get("config"):
        raise EdgevitError(f"bundle {bundle} holds {model['name']!r}, which does not track video; convert efficienttam")
    cfg_dict = {k: tuple(v) if isinstance(v, list) else v for k, v in model["config"].items()}
    cfg = EfficientTAMConfig(**cfg_dict)
    arts = {name: artifact_for(manifest, name, target) for name in UNIT_NAMES}
    runners = {name: unit_runner(bundle, art, num_threads) for name, art in arts.items()}
    targets = sorted({a["target"] for a in arts.values()})
    source = {
        "model": f"{model['name']}_{model['variant']}",
        "runtime": "+".join(targets),
        "weights": manifest["weights"]["source"],
    }
    return Tracker(cfg, runners), source


def make_tracker(
    model_name: str, variant: str | None, checkpoint: Path | None, bundle: Path | None, target: str | None
) -> tuple[Tracker, dict]:
    from edgevit.models import create, resolve

    if bundle is not None:
        return bundle_tracker(bundle, target)
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
