"""Tracker FPS files `edgevit report` takes beside bench results: where each tracked frame's milliseconds go.

Two producers write them, both from the same per-frame profile (edgevit/video/profile.py: each unit timed where
the tracker calls it, "loop" = the frame minus its units, frame 0 left out):
- `edgevit track ... --profile --json` (one tracker: `model`, `runtime`, `profile`);
- `python -m benchmarks.suites.tracker_fps` (its results JSON: `data.variants[].trackers{name: {profile, IoU}}`).
Both become runs: a label, FPS, frame median/p90 and the median ms of every unit and of the loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PARTS = ("image_encoder", "memory_attention", "prompt_mask_decoder", "memory_encoder", "loop")


def is_tracker_file(data: Any) -> bool:
    """Whether `data` is a track --profile summary or a tracker_fps suite results file."""
    if not isinstance(data, dict):
        return False
    if isinstance(data.get("profile"), dict) and "runtime" in data:
        return True
    variants = data.get("data", {}).get("variants") if isinstance(data.get("data"), dict) else None
    return isinstance(variants, list) and all(isinstance(v, dict) and "trackers" in v for v in variants)


def run_of(label: str, profile: dict[str, Any], source: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    units = profile["units"]
    # a tracker timed per frame only (the official predictor) has no split: its bar is the whole frame
    split = {part: units[part]["median_ms"] for part in PARTS if units.get(part) is not None}
    return {
        "label": label,
        "source": str(source),
        "fps": profile["fps"],
        "frame_ms": profile["frame"]["median_ms"],
        "p90_ms": profile["frame"]["p90_ms"],
        "frames_measured": profile.get("frames_measured"),
        "units_ms": split or {"whole frame (not split)": profile["frame"]["median_ms"]},
        **(extra or {}),
    }


def tracker_runs(path: Path, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs a tracker file holds (see the module docstring)."""
    if "profile" in data:
        label = f"{data.get('model', 'tracker')} · {data['runtime']}"
        return [run_of(label, data["profile"], path, {"video": data.get("video"), "weights": data.get("weights")})]
    runs = []
    for variant in data["data"]["variants"]:
        for name, tracker in variant["trackers"].items():
            iou = {"iou_mean": tracker.get("iou_mean")} if "iou_mean" in tracker else {}
            runs.append(run_of(f"{variant['variant']} · {name}", tracker["profile"], path, iou))
    return runs
