"""Assemble a tracker from a registered model (eager units) or from a converted bundle's artifacts."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch

from edgevit.errors import EdgevitError
from edgevit.models.efficienttam.config import EfficientTAMConfig
from edgevit.video.tracker import UNIT_NAMES, Runner, Tracker


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks; two empty masks agree fully (check areas first)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


# The conv/matmul-heavy units; the decoder (~3 % of a frame) ran slower under autocast in a probe (casts dominate).
BF16_UNITS = ("image_encoder", "memory_attention", "memory_encoder")


def eager_tracker(model, bf16: Collection[str] = ()) -> Tracker:
    """The tracker over the model's eager units; those named in `bf16` run under CPU bfloat16 autocast.

    Autocast runs matmuls and convolutions in bfloat16 (oneDNN's AVX512-BF16 kernels where the CPU has them)
    and hands float32 back to the loop, so the memory bank and mask choice are unchanged. Measured on the
    EfficientTAM trackers: benchmarks/results/tracker_fps.md.
    """
    units = {u.name: u for u in model.deploy_units()}
    unknown = sorted(set(bf16) - set(units))
    if unknown:
        raise EdgevitError(f"no unit(s) {unknown} to run in bfloat16; units: {', '.join(units)}")
    return Tracker(model.cfg, {name: _bf16(u.run_eager) if name in bf16 else u.run_eager for name, u in units.items()})


def _bf16(run: Runner) -> Runner:
    def autocast(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = run(*inputs)
        return tuple(x.float() if x.is_floating_point() else x for x in out)

    return autocast


def bundle_tracker(bundle: Path, target: str | None, num_threads: int | None = None) -> tuple[Tracker, dict]:
    """Drive a converted bundle's units: the same loop, another runtime, so masks can be compared.

    The manifest is validated (its config against the units' shapes too) and all four artifacts are checked
    (size, sha256) before any runtime opens one.
    """
    from converters.bundle import artifact_for, quoted, read_manifest, safe_text, unit_runner, verify_artifact
    from edgevit.bundle import warn_unchecked

    manifest = read_manifest(bundle)
    model = manifest["model"]
    if "loop" not in model:  # bundles written before the spec declared its loop
        raise EdgevitError(
            f"bundle {safe_text(str(bundle))} does not say whether its model tracks video (written by an older "
            "edgevit); convert it again"
        )
    if model["loop"] != "video":  # the spec's declaration, written by the converter
        raise EdgevitError(
            f"bundle {safe_text(str(bundle))} holds {quoted(model['name'])}, which does not track video; "
            "convert efficienttam"
        )
    cfg = config_from_manifest(model["config"])
    arts = {name: artifact_for(manifest, name, target) for name in UNIT_NAMES}
    indices = {name: manifest["artifacts"].index(art) for name, art in arts.items()}
    for name, art in arts.items():
        verify_artifact(bundle, art, indices[name])
    runners = {name: unit_runner(bundle, art, num_threads, indices[name]) for name, art in arts.items()}
    warn_unchecked(list(arts.values()))
    targets = sorted({a["target"] for a in arts.values()})
    source = {
        "model": f"{model['name']}_{model['variant']}",
        "runtime": "+".join(targets),
        "weights": manifest["weights"]["source"],
    }
    return Tracker(cfg, runners), source


def config_from_manifest(config: dict) -> EfficientTAMConfig:
    """The EfficientTAMConfig a validated manifest records (the schema fixes its fields and types)."""
    try:
        return EfficientTAMConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    except TypeError as exc:  # a config field this edgevit does not know (the schema should have said so)
        raise EdgevitError(f"the bundle's EfficientTAM config does not fit this edgevit: {exc}") from None


def make_tracker(
    model_name: str,
    variant: str | None,
    checkpoint: Path | None,
    bundle: Path | None,
    target: str | None,
    bf16: bool = False,
) -> tuple[Tracker, dict]:
    """The tracker a command asked for: a bundle's artifacts, or the eager units (with `bf16`, `BF16_UNITS` under
    bfloat16 autocast — faster on CPUs with AVX512-BF16, masks within IoU 0.997 of fp32 in tracker_fps.md)."""
    from edgevit.models import create, resolve
    from edgevit.models.checkpoint import load_checkpoint

    if bundle is not None:
        if bf16:
            raise EdgevitError("--bf16 runs the eager units under bfloat16 autocast; a bundle's artifacts keep "
                               "their own precision: drop --bf16 or --bundle")  # fmt: skip
        return bundle_tracker(bundle, target)
    fam, variant = resolve(model_name, variant)
    model = create(fam.name, variant)
    if model.spec.loop != "video":
        raise EdgevitError(f"model {fam.name!r} does not track video; use efficienttam")
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    source = {
        "model": f"{fam.name}_{variant}",
        "runtime": "eager torch, bf16 autocast" if bf16 else "eager torch",
        "weights": "checkpoint" if checkpoint else "random",
    }
    return eager_tracker(model, BF16_UNITS if bf16 else ()), source
