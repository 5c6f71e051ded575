"""`edgevit track`: one object through a video, eager or through a converted bundle's units."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from edgevit.errors import EdgevitError


def parse_xy(text: str, what: str, n: int = 2) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        example = "X,Y" if n == 2 else "X0,Y0,X1,Y1"
        raise EdgevitError(f"{what} {text!r} is not {example} (numbers separated by commas)")
    return values


def resolve_video(video: str) -> Path:
    from edgevit.data.video import sample_video

    if video.startswith("sample:"):
        return sample_video(video.split(":", 1)[1])
    path = Path(video)
    if not path.is_file():
        raise EdgevitError(f"video {video!r} does not exist; pass a video file or sample:bikes")
    return path


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
) -> None:
    import cv2
    from rich.console import Console
    from rich.progress import Progress

    from edgevit.data.video import read_frames, video_info
    from edgevit.io import atomic_dir, check_out
    from edgevit.models.efficienttam.tracker import Prompt
    from edgevit.tracking import make_tracker

    console = Console(stderr=True)
    check_out(out, force)
    path = resolve_video(video)
    count, width, height, fps = video_info(path)
    clicks = [parse_xy(p, "--point") for p in points] + [parse_xy(p, "--neg-point") for p in neg_points]
    prompt = Prompt(
        points=tuple((x, y) for x, y in clicks),
        labels=tuple([1] * len(points) + [0] * len(neg_points)),
        box=parse_xy(box, "--box", 4) if box else None,
    )
    tracker, source = make_tracker(model_name, variant, checkpoint, bundle, target)
    prompt.validate(width, height, tracker.cfg.max_points)
    if source["weights"] == "random":
        console.print("[bold red]WARNING: no --checkpoint given: the weights are RANDOM, the masks mean nothing.[/]")
    total = min(count, max_frames) if max_frames else count
    areas, times = [], []
    with atomic_dir(out, force) as tmp:
        writer = cv2.VideoWriter(str(tmp / "overlay.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        try:
            with Progress(console=console, transient=not sys.stderr.isatty()) as progress:
                task = progress.add_task(f"tracking {path.name}", total=total)
                frames = list(read_frames(path, total))
                t0 = time.perf_counter()
                for result, frame in zip(tracker.track(frames, prompt, num_frames=len(frames)), frames, strict=True):
                    times.append(time.perf_counter() - t0)
                    mask = result.mask
                    cv2.imwrite(str(tmp / f"{result.index:05d}.png"), mask.astype(np.uint8) * 255)
                    writer.write(cv2.cvtColor(overlay(frame, mask), cv2.COLOR_RGB2BGR))
                    areas.append(float(mask.mean()))
                    progress.advance(task)
                    t0 = time.perf_counter()
        finally:
            writer.release()
    summary = {
        "video": str(path),
        "frames": len(areas),
        "out": str(out),
        **source,
        "mask_area_fraction": [round(a, 4) for a in areas],
        "median_ms_per_frame": round(1000 * float(np.median(times)), 1) if times else None,
    }
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        console.print(
            f"wrote {len(areas)} masks and overlay.mp4 to {out} "
            f"({summary['median_ms_per_frame']} ms/frame median, {source['runtime']})"
        )
