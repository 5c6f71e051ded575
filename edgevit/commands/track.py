"""`edgevit track`: one object through a video, eager or through a converted bundle's units."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgevit.errors import EdgevitError

if TYPE_CHECKING:
    from rich.console import Console

    from edgevit.video.profile import FrameProfile
    from edgevit.video.tracker import Prompt, Tracker


def parse_xy(text: str, what: str, n: int = 2) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        example = "X,Y" if n == 2 else "X0,Y0,X1,Y1"
        raise EdgevitError(f"{what} {text!r} is not {example} (numbers separated by commas)")
    return values


def overlay(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Tint the object red and keep the rest of the frame, RGB uint8."""
    out = frame.astype(np.float32)
    out[mask] = 0.45 * out[mask] + 0.55 * np.array([255.0, 40.0, 40.0])
    return out.astype(np.uint8)


def track(
    video: str,
    points: list[str],
    neg_points: list[str],
    box: str | None,
    model_name: str,
    variant: str | None,
    checkpoint: Path | None,
    bundle: Path | None,
    target: str | None,
    out: Path,
    max_frames: int | None,
    force: bool,
    as_json: bool,
    profile: bool = False,
    bf16: bool = False,
) -> None:
    from rich.console import Console

    from converters.bundle import atomic_dir, check_out
    from edgevit.data.video import resolve_video, video_info
    from edgevit.video.assemble import make_tracker
    from edgevit.video.profile import FrameProfile
    from edgevit.video.tracker import Prompt

    console = Console(stderr=True)
    if max_frames is not None and max_frames < 1:
        raise EdgevitError(f"--max-frames must be at least 1, got {max_frames}")
    path = resolve_video(video)
    check_out(out, force, inputs=[path, checkpoint, bundle])
    count, width, height, fps = video_info(path)
    clicks = [parse_xy(p, "--point") for p in points] + [parse_xy(p, "--neg-point") for p in neg_points]
    prompt = Prompt(
        points=tuple((x, y) for x, y in clicks),
        labels=tuple([1] * len(points) + [0] * len(neg_points)),
        box=parse_xy(box, "--box", 4) if box else None,
    )
    tracker, source = make_tracker(model_name, variant, checkpoint, bundle, target, bf16)
    prompt.validate(width, height, tracker.cfg.max_points)
    if source["weights"] == "random":
        console.print("[bold red]WARNING: no --checkpoint given: the weights are RANDOM, the masks mean nothing.[/]")
    estimate = min(count, max_frames) if count and max_frames else (count or max_frames)
    profiled = FrameProfile() if profile else None
    with atomic_dir(out, force) as tmp:
        areas, times = _track_into(
            tmp, tracker, prompt, path, max_frames, estimate, (width, height), fps, console, profiled
        )
    summary = {
        "video": str(path),
        "frames": len(areas),
        "out": str(out),
        **source,
        "mask_area_fraction": [round(a, 4) for a in areas],
        "median_ms_per_frame": round(1000 * float(np.median(times)), 1),
    }
    if profiled is not None:  # the table goes to stderr, so stdout stays one JSON document with --json
        summary["profile"] = profiled.summary()
        console.print(_profile_table(summary["profile"], source["runtime"]))
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        console.print(
            f"wrote {len(areas)} masks and overlay.mp4 to {out} "
            f"({summary['median_ms_per_frame']} ms/frame median, {source['runtime']})"
        )


class _Latest:
    """Frames passed through to the tracker, keeping only the last: the one its latest result belongs to.

    (`itertools.tee` would also pair frames with results, but it frees its buffer in blocks of 57 items.)
    """

    def __init__(self, frames: Iterator[np.ndarray]) -> None:
        self._frames = frames
        self._index = -1
        self._frame: np.ndarray | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        for index, frame in enumerate(self._frames):
            self._index, self._frame = index, frame
            yield frame

    def of(self, index: int) -> np.ndarray:
        if index != self._index or self._frame is None:
            raise RuntimeError(f"the tracker gave frame {index}'s result after reading frame {self._index}")
        return self._frame


def _track_into(
    folder: Path,
    tracker: Tracker,
    prompt: Prompt,
    path: Path,
    max_frames: int | None,
    estimate: int | None,
    size: tuple[int, int],
    fps: float,
    console: Console,
    profile: FrameProfile | None = None,
) -> tuple[list[float], list[float]]:
    """Track `path` frame by frame into `folder` (one mask PNG per frame and overlay.mp4); (mask areas, seconds).

    Frames are streamed: the decoder runs at most one frame ahead of the tracker, so memory does not grow
    with the video's length. The count is what was decoded (a video that decodes none raises); the
    container's claim (`estimate`) only sizes the progress bar. Every write is checked: opencv reports a failed
    one only by a return value, or by an empty file.
    """
    import cv2
    from rich.progress import Progress

    from edgevit.data.images import write_png
    from edgevit.data.video import open_writer, read_frames

    width, height = size
    areas: list[float] = []
    times: list[float] = []
    writer = open_writer(folder / "overlay.mp4", fps, width, height)
    try:
        with Progress(console=console, transient=not sys.stderr.isatty()) as progress:
            task = progress.add_task(f"tracking {path.name}", total=estimate)
            # The tracker needs no frame count: tracking forward from frame 0, the official cap of object
            # pointers at the video's length never binds before the frames run out.
            frames = _Latest(read_frames(path, max_frames))
            if profile is not None:
                tracker, fed = profile.attach(tracker), profile.feed(frames)
            else:
                fed = frames
            t0 = time.perf_counter()
            for result in tracker.track(fed, prompt):
                if profile is not None:
                    profile.frame_done()
                times.append(time.perf_counter() - t0)
                frame = frames.of(result.index)
                if frame.shape[:2] != (height, width):
                    raise EdgevitError(
                        f"frame {result.index} of {path.name} is {frame.shape[1]}x{frame.shape[0]}, the video "
                        f"began at {width}x{height}; re-encode it at one size"
                    )
                mask = result.mask
                write_png(folder / f"{result.index:05d}.png", mask.astype(np.uint8) * 255)
                writer.write(cv2.cvtColor(overlay(frame, mask), cv2.COLOR_RGB2BGR))
                areas.append(float(mask.mean()))
                progress.update(task, advance=1, total=max(estimate, len(areas)) if estimate else None)
                t0 = time.perf_counter()
            progress.update(task, total=len(areas))
    finally:
        writer.release()
    if not (folder / "overlay.mp4").is_file() or (folder / "overlay.mp4").stat().st_size == 0:
        raise EdgevitError(f"opencv wrote no overlay.mp4 for {path.name}; check free disk space and the codec")
    return areas, times


def _profile_table(profile: dict, runtime: str):
    """The --profile table: median/p90 ms per unit and the loop's Python, share of the frame, FPS."""
    from rich.table import Table

    from edgevit.video.profile import profile_rows

    table = Table(
        title=f"time per frame, {runtime} ({profile['frames_measured']} frames after {profile['frames_skipped']} "
        f"skipped; {profile['fps']} FPS)"
    )
    for column in ("part", "median ms", "p90 ms", "share %"):
        table.add_column(column, justify="left" if column == "part" else "right")
    for row in profile_rows(profile):
        table.add_row(*(str(v) for v in row))
    return table
