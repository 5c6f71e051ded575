"""Where a tracked frame's milliseconds go: each deploy unit, and the loop's own Python around them.

A `FrameProfile` wraps a tracker's runners so that every unit call is timed with `perf_counter` right where the
loop makes it (the same call, eager torch or an artifact's runtime including its tensor conversions), and it
wraps the frame source so that a frame's clock starts when the tracker receives the decoded frame; the caller
stops it when the tracker yields that frame's result. "loop" is the frame's time minus its units: resizing the
frame, building the memory bank, choosing the mask, upsampling it to the video. Decoding and writing the
outputs fall outside every frame's clock. Nothing is wrapped unless a profile is asked for, so an unprofiled
tracker does no extra work.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from edgevit.video.tracker import UNIT_NAMES, Runner, Tracker

LOOP = "loop"
PARTS = (*UNIT_NAMES, LOOP)


class FrameProfile:
    """Per-frame wall time of every unit call and of the whole frame, for one tracker run."""

    def __init__(self) -> None:
        self.frames: list[dict[str, float]] = []  # seconds per part, plus "frame"
        self._units: dict[str, float] | None = None
        self._start = 0.0

    def attach(self, tracker: Tracker) -> Tracker:
        """The same tracker (config, runners) with each runner timed into this profile."""
        return Tracker(tracker.cfg, {name: self._timed(name, run) for name, run in tracker.run.items()})

    def _timed(self, name: str, run: Runner) -> Runner:
        def timed(*inputs: Any) -> Any:
            start = time.perf_counter()
            out = run(*inputs)
            elapsed = time.perf_counter() - start
            if self._units is None:
                raise RuntimeError(f"unit {name} ran outside a frame; pass the frames through FrameProfile.feed")
            self._units[name] += elapsed
            return out

        return timed

    def feed(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """`frames`, each one starting its frame's clock as the tracker takes it."""
        for frame in frames:
            self._units = dict.fromkeys(UNIT_NAMES, 0.0)
            self._start = time.perf_counter()
            yield frame

    def frame_done(self) -> None:
        """Stop the current frame's clock: call it as soon as the tracker yields the frame's result."""
        total = time.perf_counter() - self._start
        if self._units is None:
            raise RuntimeError("frame_done() without a frame fed")
        self.frames.append({**self._units, LOOP: total - sum(self._units.values()), "frame": total})
        self._units = None

    def summary(self, skip: int = 1) -> dict[str, Any]:
        """Median/p90 ms per part, its share of the frame time and the FPS, over frames after the first `skip`.

        Frame 0 is skipped by default: it is the prompted frame (another decoder path, an empty memory bank)
        and it pays every runtime's first-call set-up. With no frame left after `skip`, all frames are used.
        """
        measured = self.frames[skip:] or self.frames
        if not measured:
            raise ValueError("no frames were profiled")
        frame_ms = np.array([f["frame"] for f in measured]) * 1e3
        total = float(frame_ms.sum())
        parts = {}
        for part in PARTS:
            ms = np.array([f[part] for f in measured]) * 1e3
            parts[part] = {
                "median_ms": round(float(np.median(ms)), 2),
                "p90_ms": round(float(np.percentile(ms, 90)), 2),
                "mean_ms": round(float(ms.mean()), 2),
                "share": round(float(ms.sum()) / total, 4) if total > 0 else 0.0,
            }
        median_frame = float(np.median(frame_ms))
        return {
            "frames_measured": len(measured),
            "frames_skipped": len(self.frames) - len(measured),
            "units": parts,
            "frame": {
                "median_ms": round(median_frame, 2),
                "p90_ms": round(float(np.percentile(frame_ms, 90)), 2),
                "mean_ms": round(float(frame_ms.mean()), 2),
            },
            "fps": round(1e3 / median_frame, 3) if median_frame > 0 else None,
            "per_frame_ms": [{k: round(v * 1e3, 3) for k, v in f.items()} for f in self.frames],
        }


def profile_rows(summary: dict[str, Any]) -> list[list[Any]]:
    """Table rows (part, median ms, p90 ms, share %) of a summary, the frame and its FPS last."""
    rows: list[list[Any]] = [
        [part, s["median_ms"], s["p90_ms"], round(100 * s["share"], 1)] for part, s in summary["units"].items()
    ]
    frame = summary["frame"]
    rows.append(["frame", frame["median_ms"], frame["p90_ms"], 100.0])
    return rows
