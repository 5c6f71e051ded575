"""Tracker fidelity for `edgevit bench`: the bundle's converted trackers against a reference tracker on a clip
(mean mask IoU per target × precision), and J&F against ground truth on a DAVIS-layout folder.

A tracker is the four deploy units of one target and precision driven by the same loop (`Tracker`), so the
comparison covers what a user of the bundle gets, memory bank and mask choice included. The reference is the
fp32 eager tracker when the caller has the model (`edgevit bench --checkpoint`, sha256-checked against the
manifest, or a Python caller's own model); otherwise it is the bundle's first fp32 tracker that runs here,
which the parity gate held within 60 dB SQNR of eager per unit at conversion.

Random weights say "no object" on every frame (STACK.md): both sides then give empty masks and agree vacuously,
so an IoU over empty reference masks is not reported as a figure, and a bundle whose weights are random gets
its figures labelled "arithmetic check, not accuracy" (a test raises the object-score bias first, as
benchmarks/suites/tracker_fps/run.py does, so that masks are not empty).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit.errors import EdgevitError
from edgevit.video.tracker import UNIT_NAMES, FrameResult, Prompt, Tracker

ARITHMETIC = "arithmetic check, not accuracy: the bundle's weights are random (no checkpoint)"
Progress = Callable[[str, int, int], None]


def tracker_sets(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """(target, precision) pairs for which the bundle holds all four units, in manifest order."""
    seen: dict[tuple[str, str], set[str]] = {}
    for art in manifest["artifacts"]:
        seen.setdefault((art["target"], art["precision"]), set()).add(art["unit"])
    return [key for key, units in seen.items() if set(UNIT_NAMES) <= units]


def artifact_tracker(bundle: Path, manifest: dict[str, Any], target: str, precision: str, threads: int | None):
    """The tracker of one target × precision (every artifact's sha256 checked before its runtime opens it)."""
    from converters.bundle import unit_runner
    from edgevit.video.assemble import config_from_manifest

    runners = {}
    for index, art in enumerate(manifest["artifacts"]):
        if art["target"] == target and art["precision"] == precision and art["unit"] in UNIT_NAMES:
            runners.setdefault(art["unit"], unit_runner(bundle, art, threads, index))
    return Tracker(config_from_manifest(manifest["model"]["config"]), runners)


def check_checkpoint(manifest: dict[str, Any], checkpoint: Path) -> None:
    """One line unless `checkpoint` is the file the bundle was converted from (the manifest's sha256)."""
    from edgevit.models.checkpoint import sha256_of

    weights = manifest["weights"]
    recorded = weights.get("checkpoint_sha256")
    if weights["source"] != "checkpoint" or recorded != sha256_of(checkpoint):
        raise EdgevitError(
            f"--checkpoint {checkpoint} is not the checkpoint this bundle was converted from (the manifest's weights "
            f"are {weights['source']!r}{', sha256 ' + recorded[:12] if recorded else ''}); "
            "pass that file or drop --checkpoint"
        )


def eager_reference(manifest: dict[str, Any], checkpoint: Path) -> Tracker:
    """The fp32 eager tracker of the checkpoint the bundle was converted from, built with the manifest's config."""
    from edgevit.models import create
    from edgevit.video.assemble import eager_tracker

    check_checkpoint(manifest, checkpoint)
    model = manifest["model"]
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in model["config"].items()}
    return eager_tracker(create(model["name"], model["variant"], checkpoint, **config))


def track(tracker: Tracker, frames: list[np.ndarray], prompt: Prompt) -> list[FrameResult]:
    return list(tracker.track(iter(frames), prompt, num_frames=len(frames)))


def agreement(reference: list[FrameResult], got: list[FrameResult]) -> dict[str, Any]:
    """Mean/min mask IoU and the logit SQNR against the reference; no IoU when the reference saw nothing.

    The SQNR pools signal and noise over the frames whose logits differ: a per-frame mean would be infinite as
    soon as one frame agrees bit for bit, and a "no object" frame (the constant -1024 on both sides) would swamp
    a pooled signal; every frame identical gives inf, which is then the truth."""
    from edgevit.video.assemble import mask_iou
    from quant.metrics import sqnr

    area = float(np.mean([r.mask.mean() for r in reference]))
    differ = [(r.mask_logits, g.mask_logits) for r, g in zip(reference, got, strict=True)]
    differ = [(r, g) for r, g in differ if not torch.equal(r, g)] or differ[:1]
    pooled = sqnr(torch.cat([r.ravel() for r, _ in differ]), torch.cat([g.ravel() for _, g in differ]))
    figures: dict[str, Any] = {"reference_area": area, "logit_sqnr_db": float(pooled)}
    if not any(r.mask.any() for r in reference):
        why = "vacuous: the reference tracker saw no object on any frame (random weights say 'no object')"
        return {**figures, "iou_mean": None, "iou_min": None, "note": why}
    ious = [mask_iou(r.mask, g.mask) for r, g in zip(reference, got, strict=True)]
    return {**figures, "iou_mean": float(np.mean(ious)), "iou_min": float(np.min(ious))}


def runnable_trackers(
    bundle: Path,
    manifest: dict[str, Any],
    threads: int | None,
    not_here: Callable[[str], str | None],
    targets: Iterable[str] | None = None,
) -> tuple[dict[str, Tracker], list[dict[str, Any]]]:
    """Trackers of every target × precision (of `targets`, if given) that can run here, and a row for each that
    cannot (with why)."""
    from converters.bundle import BundleError

    trackers, rows = {}, []
    wanted = None if targets is None else set(targets)
    for target, precision in tracker_sets(manifest):
        if wanted is not None and target not in wanted:
            continue
        name = f"{target} {precision}"
        if (why := not_here(target)) is not None:
            rows.append({"target": target, "precision": precision, "status": "not run", "reason": why})
            continue
        try:
            trackers[name] = artifact_tracker(bundle, manifest, target, precision, threads)
        except BundleError as exc:
            rows.append({"target": target, "precision": precision, "status": "failed", "reason": str(exc)})
    return trackers, rows


def clip_fidelity(
    bundle: Path,
    manifest: dict[str, Any],
    frames: list[np.ndarray],
    prompt: Prompt,
    clip_note: str,
    *,
    reference: tuple[str, Tracker] | None = None,
    threads: int | None = None,
    targets: Iterable[str] | None = None,
    not_here: Callable[[str], str | None] = lambda target: None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Every runnable tracker of the bundle on `frames` against the reference: one row per target × precision."""
    trackers, rows = runnable_trackers(bundle, manifest, threads, not_here, targets)
    if reference is None:
        fp32 = [name for name in trackers if name.endswith(" fp32")]
        if not fp32:
            return {"clip": clip_note, "rows": rows, "note": "no fp32 tracker ran here to compare with"}
        reference = (f"{fp32[0]} artifacts (bundle)", trackers[fp32[0]])
    ref_name, ref_tracker = reference
    ref = track(ref_tracker, frames, prompt)
    for i, (name, tracker) in enumerate(trackers.items()):
        if progress:
            progress("tracker fidelity", i, len(trackers))
        target, precision = name.split(" ")
        row = {"target": target, "precision": precision, "status": "ok", "frames": len(frames)}
        if tracker is ref_tracker:
            rows.append({**row, "note": "reference"})
            continue
        try:
            got = track(tracker, frames, prompt)
        except Exception as exc:  # a runtime failing mid-clip: this tracker's recorded failure, not the run's
            rows.append({**row, "status": "failed", "reason": f"{type(exc).__name__}: {str(exc).strip()[:200]}"})
            continue
        rows.append({**row, **agreement(ref, got)})
    if progress:
        progress("tracker fidelity", len(trackers), len(trackers))
    return {
        "clip": clip_note,
        "frames": len(frames),
        "reference": ref_name,
        "label": ARITHMETIC if manifest["weights"]["source"] == "random" else None,
        "rows": rows,
    }


def davis_fidelity(
    bundle: Path,
    manifest: dict[str, Any],
    root: Path,
    *,
    reference: tuple[str, Tracker] | None = None,
    threads: int | None = None,
    max_frames: int | None = None,
    targets: Iterable[str] | None = None,
    not_here: Callable[[str], str | None] = lambda target: None,
) -> dict[str, Any]:
    """J, F and J&F of every runnable tracker (and the reference, when given) on each object of each sequence of
    a DAVIS-layout folder, each object prompted with its first-frame mask."""
    from benchmarks.davis import DavisError, read_davis, sequence_scores
    from edgevit.data.images import load_image

    try:
        sequences = read_davis(root)
    except DavisError as exc:
        raise EdgevitError(str(exc)) from None
    trackers, rows = runnable_trackers(bundle, manifest, threads, not_here, targets)
    named = ({reference[0]: reference[1]} if reference else {}) | trackers
    for name, tracker in named.items():
        per_object = []
        for seq in sequences:
            paths = seq.frames[:max_frames] if max_frames else seq.frames
            frames = [load_image(p) for p in paths]
            for obj in seq.first_objects():
                truth = [seq.truth(i, obj) for i in range(len(paths))]
                results = track(tracker, frames, Prompt(mask=truth[0]))
                scores = sequence_scores([r.mask for r in results], truth)
                per_object.append({"sequence": seq.name, "object": obj, **scores})
        rows.append({"tracker": name, **mean_scores(per_object), "objects": per_object})
    return {"root": str(root), "sequences": [s.name for s in sequences], "max_frames": max_frames, "rows": rows}


def mean_scores(per_object: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """J, F, J&F averaged over objects that had scored frames (the DAVIS mean over objects)."""
    scored = [o for o in per_object if o["J"] is not None]
    if not scored:
        return {"status": "ok", "J": None, "F": None, "J&F": None, "note": "no frame to score (need 3 or more)"}
    j, f = float(np.mean([o["J"] for o in scored])), float(np.mean([o["F"] for o in scored]))
    return {"status": "ok", "J": j, "F": f, "J&F": (j + f) / 2}
