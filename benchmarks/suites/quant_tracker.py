"""The int8 EfficientTAM tracker against the fp32 one: mask agreement and time per frame, per target.

What a user of `edgevit convert --quant ptq` gets: every deploy unit quantized (calibrated on one clip while
the model tracks it), then the whole video loop driven through the int8 artifacts. Judged on another clip
against the eager fp32 tracker, frame by frame — mask IoU and logit SQNR — beside the fp32 artifacts of the
same target, so the cost of int8 is read apart from the cost of lowering. Time per frame is the whole loop
(all four units plus the tracker's own work), trackers run round-robin over the clip.

No EfficientTAM weights ship in any package: the model is random, and random weights say "no object" on
every frame (all logits at -1024, STACK.md), which makes every comparison vacuous. The object-score bias is
raised (`--object-bias`) so masks cover part of the frame; the report states it. Accuracy on a real
checkpoint needs that checkpoint; the loop, the units and the kernels measured are the same.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from benchmarks.cli import publish_results, run_conditions, suite_parser
from benchmarks.machine import describe_machine
from benchmarks.report import Table
from benchmarks.timing import Stats, set_threads

EXAMPLE = (
    "OMP_WAIT_POLICY=PASSIVE python -m benchmarks.suites.quant_tracker --models efficienttam_ti_512 "
    "--targets onnx,tflite,executorch --frames 12 --rounds 3 --out benchmarks/results/"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = suite_parser(
        "python -m benchmarks.suites.quant_tracker",
        "Quantize every EfficientTAM unit (edgevit's PTQ, calibrated while tracking one clip), then track another "
        "clip with the int8 and the fp32 artifacts and compare masks and time per frame with the eager fp32 "
        "tracker; writes NAME.json and NAME.md under --out.",
        name="quant_tracker",
        threads=1,
        example=EXAMPLE,
    )
    parser.add_argument("--models", default="efficienttam_ti_512", help="comma-separated EfficientTAM variants")
    parser.add_argument("--targets", default="onnx,tflite,executorch", help="comma-separated runnable targets")
    parser.add_argument("--method", default="ptq", help="ptq or mptq (default ptq)")
    parser.add_argument("--frames", type=int, default=12, help="frames of the evaluation clip (default 12)")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the clip per tracker (default 3)")
    parser.add_argument("--object-bias", type=float, default=20.0, help="object-score bias of the random model")
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.targets = [t for t in args.targets.split(",") if t]
    return args


def evaluation_clip(frames: int) -> list[np.ndarray]:
    """Consecutive frames of the clip calibration does not use (`--calib builtin` tunes on bikes.mp4)."""
    from edgevit.data.video import read_frames, sample_video

    return list(read_frames(sample_video("bigbuckbunny"), frames))


def time_trackers(trackers: dict[str, Any], frames: list[np.ndarray], prompt: Any, rounds: int) -> dict[str, Stats]:
    """Seconds per frame of each tracker over the whole clip, trackers round-robin with a rotating start."""
    names = list(trackers)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            for _ in trackers[name].track(frames, prompt, num_frames=len(frames)):
                pass
            samples[name].append((time.perf_counter() - start) / len(frames))
    return {n: Stats.of(s) for n, s in samples.items()}


def run_model(name: str, args: argparse.Namespace, work: Path, console: Console) -> dict[str, Any]:
    from edgevit.pipeline import QuantConfig, Recipe, build_model, check, run_model
    from edgevit.video.assemble import bundle_tracker, eager_tracker, mask_iou
    from edgevit.video.calibration import centre_click
    from quant.metrics import sqnr

    fp32 = Recipe(model=name, targets=tuple(args.targets), precision="fp32", seed=0)
    int8 = Recipe(model=name, targets=tuple(args.targets), passes=(QuantConfig(args.method, "8"),), seed=0)
    targets = check(int8).kept
    model = build_model(int8)
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(args.object_bias)
    started = time.perf_counter()
    console.print(f"{name}: quantizing every unit for {', '.join(targets)}")
    int8_manifest = run_model(model, int8, out=work / f"{name}-int8")
    quantize_s = time.perf_counter() - started
    console.print(f"{name}: converting fp32 artifacts ({quantize_s:.0f} s so far)")
    run_model(model, fp32, out=work / f"{name}-fp32")

    frames = evaluation_clip(args.frames)
    prompt = centre_click(frames[0])
    trackers = {"eager fp32": eager_tracker(model)}
    for target in targets:
        for precision in ("fp32", "int8"):
            trackers[f"{target} {precision}"] = bundle_tracker(work / f"{name}-{precision}", target, args.threads)[0]
    results = {key: list(tr.track(frames, prompt, num_frames=len(frames))) for key, tr in trackers.items()}
    reference = results["eager fp32"]
    console.print(f"{name}: timing {len(trackers)} trackers x {args.rounds} passes over {len(frames)} frames")
    timing = time_trackers(trackers, frames, prompt, args.rounds)
    rows = {}
    for key, got in results.items():
        ious = [mask_iou(r.mask, g.mask) for r, g in zip(reference, got, strict=True)]
        sqnrs = [sqnr(r.mask_logits, g.mask_logits) for r, g in zip(reference, got, strict=True)]
        rows[key] = {
            "iou_mean": float(np.mean(ious)),
            "iou_min": float(np.min(ious)),
            "sqnr_mean_db": float(np.mean(sqnrs)),
            "sqnr_min_db": float(np.min(sqnrs)),
            "ms_per_frame": timing[key].to_dict(),
        }
    sizes: dict[str, int] = {}
    for art in int8_manifest["artifacts"]:
        sizes[art["target"]] = sizes.get(art["target"], 0) + int(art["size_bytes"])
    return {
        "model": name,
        "frames": len(frames),
        "reference_mask_area": [float(r.mask.mean()) for r in reference],
        "quantize_seconds": quantize_s,
        "int8_bytes_per_target": sizes,
        "calibration": int8_manifest["quant"]["calibration"],
        "trackers": rows,
    }


def agreement_table(results: list[dict[str, Any]]) -> Table:
    table = Table(
        "Tracker vs eager fp32 on bigbuckbunny.mp4 (calibrated on bikes.mp4)",
        ["model", "tracker", "mean IoU", "min IoU", "mean logit SQNR dB", "min SQNR dB", "ms/frame", "× eager"],
    )
    for res in results:
        eager_ms = res["trackers"]["eager fp32"]["ms_per_frame"]["median_ms"]
        for key, row in res["trackers"].items():
            ms = row["ms_per_frame"]["median_ms"]
            table.rows.append(
                [
                    res["model"],
                    key,
                    round(row["iou_mean"], 4),
                    round(row["iou_min"], 4),
                    _db(row["sqnr_mean_db"]),
                    _db(row["sqnr_min_db"]),
                    round(ms, 1),
                    round(ms / eager_ms, 2),
                ]
            )
    table.notes.append("ms/frame: the whole loop (all four units + tracker bookkeeping), median over passes.")
    return table


def _db(value: float) -> float | str:
    return "inf" if value == float("inf") else round(value, 1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 200)
    threads = set_threads(args.threads)
    machine = describe_machine()
    results = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgevit-quant-tracker-") as tmp:
        for name in args.models:
            results.append(run_model(name, args, Path(tmp), console))
    tables = [agreement_table(results)]
    summary = [
        f"Weights are random with the object-score bias at {args.object_bias} so masks are not empty "
        "(no EfficientTAM checkpoint ships in any package); reference mask area per frame is in the JSON.",
        f"Quantization: edgevit {args.method} W8A8 plan per unit; onnx runs it as static QDQ, executorch and "
        "tflite as the plan's int8 weights with dynamic int8 activations (converters/quantized.py).",
        run_conditions(threads, machine["load_average"], started),
    ]
    publish_results(
        args,
        title="Int8 EfficientTAM tracker vs fp32",
        machine=machine,
        tables=tables,
        summary=summary,
        data={"models": results},
        console=console,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
