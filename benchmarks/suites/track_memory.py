"""Peak memory of `edgevit track` on a long video against a short one with the same content.

`track` streams frames: the decoder runs at most one frame ahead of the tracker and a frame is freed once its
mask and overlay are written, so peak memory must not grow with the video's length. This suite makes two
videos with opencv (the same moving shapes, one short and one long), tracks each through a small converted
bundle in a fresh process, and reads that process's peak resident set size (`ru_maxrss` from `os.wait4`).
The claim holds when the long run peaks within 1.5x of the short one.

The bundle is EfficientTAM-Ti at a small input (`--set image_size=128`, ONNX): the loop, the decoder and the
writers are the ones any bundle uses, and a small model keeps thousands of frames feasible on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.cli import publish_results, suite_parser
from benchmarks.machine import describe_machine, load_average
from benchmarks.report import Table

EXAMPLE = (
    "OMP_WAIT_POLICY=PASSIVE python -m benchmarks.suites.track_memory --short-seconds 10 --long-seconds 600 "
    "--fps 5 --out benchmarks/results/"
)
LIMIT = 1.5  # the long run's peak over the short run's may not exceed this


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = suite_parser(
        "python -m benchmarks.suites.track_memory",
        "Track a short and a long opencv-made video (same content) through a small EfficientTAM bundle, each in "
        "its own process, and compare the processes' peak RSS; writes NAME.json and NAME.md.",
        name="track_memory",
        example=EXAMPLE,
    )
    parser.add_argument("--short-seconds", type=float, default=10.0, help="length of the short video (default 10)")
    parser.add_argument("--long-seconds", type=float, default=600.0, help="length of the long video (default 600)")
    parser.add_argument("--fps", type=float, default=5.0, help="frame rate of both videos (default 5)")
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT of both videos (default 320x240)")
    parser.add_argument("--image-size", type=int, default=128, help="EfficientTAM input size of the bundle")
    parser.add_argument("--bundle", type=Path, default=None, help="an existing bundle (default: convert one)")
    parser.add_argument("--workdir", type=Path, default=None, help="where videos and outputs go (default: temp)")
    args = parser.parse_args(argv)
    args.width, args.height = (int(v) for v in args.size.lower().split("x"))
    return args


def shapes_frame(index: int, width: int, height: int) -> np.ndarray:
    """Frame `index` of the test clip (BGR): a disc crossing the frame and a square on a circle, on a grey ramp.

    Content depends only on the index, so a short video is the first seconds of the long one.
    """
    ramp = np.linspace(30, 90, width, dtype=np.float32)
    frame = np.repeat(np.repeat(ramp[None, :, None], height, axis=0), 3, axis=2).astype(np.uint8)
    x = int((index * 4) % (width + 80)) - 40
    disc = (x, height // 2)
    angle = index * 0.05
    square = (int(width / 2 + width / 4 * np.cos(angle)), int(height / 2 + height / 4 * np.sin(angle)))
    cv2.circle(frame, disc, height // 8, (0, 200, 255), -1)
    cv2.rectangle(frame, (square[0] - 12, square[1] - 12), (square[0] + 12, square[1] + 12), (200, 60, 30), -1)
    return frame


def make_video(path: Path, frames: int, fps: float, width: int, height: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"opencv cannot write {path}")
    for i in range(frames):
        writer.write(shapes_frame(i, width, height))
    writer.release()
    return path


def convert_bundle(out: Path, image_size: int) -> Path:
    cmd = ["edgevit", "convert", "--model", "efficienttam", "--variant", "ti", "--set", f"image_size={image_size}"]
    subprocess.run([*cmd, "--target", "onnx", "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    return out


def run_measured(cmd: list[str], log: Path) -> dict[str, Any]:
    """Run `cmd`, returning its exit code, wall time, stdout and peak RSS (from the kernel's rusage of it)."""
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "exit_code": proc.returncode,
        "seconds": seconds,
        "max_rss_mib": usage.ru_maxrss / 1024,  # Linux reports KiB
        "stdout": log.with_suffix(".out").read_text(),
        "stderr": log.with_suffix(".err").read_text(),
    }


def track_video(video: Path, bundle: Path, out: Path, width: int, height: int) -> dict[str, Any]:
    cmd = ["edgevit", "track", str(video), "--bundle", str(bundle), "--target", "onnx"]
    cmd += ["--point", f"{width // 2},{height // 2}", "--out", str(out), "--force", "--json"]
    result = run_measured(cmd, out.with_name(out.name + "-log"))
    if result["exit_code"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result['exit_code']}): {result['stderr'][-2000:]}")
    summary = json.loads(result["stdout"])
    return {
        "frames_tracked": summary["frames"],
        "median_ms_per_frame": summary["median_ms_per_frame"],
        "seconds": round(result["seconds"], 1),
        "max_rss_mib": round(result["max_rss_mib"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="track_memory-"))
    work.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle or convert_bundle(work / "bundle", args.image_size)
    machine = describe_machine(("torch", "numpy", "onnxruntime", "opencv-python", "opencv-python-headless"))
    runs = {}
    for label, seconds in (("short", args.short_seconds), ("long", args.long_seconds)):
        frames = round(seconds * args.fps)
        video = make_video(work / f"{label}.mp4", frames, args.fps, args.width, args.height)
        print(f"{label}: {frames} frames, {video.stat().st_size / 1e6:.1f} MB; tracking...", file=sys.stderr)
        load_before = load_average()
        runs[label] = {"video_seconds": seconds, "frames": frames, "load_before": load_before}
        runs[label] |= track_video(video, bundle, work / f"{label}-masks", args.width, args.height)
        runs[label]["load_after"] = load_average()
    ratio = runs["long"]["max_rss_mib"] / runs["short"]["max_rss_mib"]
    frame_mib = args.width * args.height * 3 / 2**20
    table = Table(
        f"peak RSS of edgevit track, {args.width}x{args.height} at {args.fps:g} fps, EfficientTAM-Ti "
        f"{args.image_size} px ONNX",
        ["video", "length s", "frames", "tracked", "ms/frame", "wall s", "max RSS MiB"],
    )
    for label, r in runs.items():
        table.rows.append(
            [
                label,
                r["video_seconds"],
                r["frames"],
                r["frames_tracked"],
                r["median_ms_per_frame"],
                r["seconds"],
                r["max_rss_mib"],
            ]
        )
    verdict = "within" if ratio <= LIMIT else "NOT within"
    table.notes += [
        f"long/short peak RSS = {ratio:.3f} ({verdict} the {LIMIT}x bound)",
        f"holding every decoded frame (the pre-streaming `list(read_frames(...))`) would add "
        f"{runs['long']['frames'] * frame_mib:.0f} MiB on the long video ({frame_mib:.2f} MiB a frame)",
        "each run is a fresh process; peak RSS is ru_maxrss from os.wait4",
    ]
    summary = [f"long/short peak RSS {ratio:.3f}x ({verdict} {LIMIT}x)"]
    data = {"runs": runs, "ratio": ratio, "limit": LIMIT, "bundle_image_size": args.image_size}
    publish_results(args, title="edgevit track memory", machine=machine, tables=[table], summary=summary, data=data)
    return 0 if ratio <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
