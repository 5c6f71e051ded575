"""Tracker FPS and where each frame's milliseconds go, for EfficientTAM variants × runtimes, side by side.

Every tracker (eager fp32, the ONNX fp32 bundle, optionally the ONNX int8 bundle) tracks the same bikes.mp4
frames with a `FrameProfile` attached, so the per-unit times are the ones the tracker loop pays (runtime tensor
conversions included) and "loop" is its own Python. Trackers of one model run round-robin, one pass over the
clip each per round with a rotating start, so the machine's load drifts onto all of them alike: on a shared
machine read the ratios within a run, not the absolute figures. The first round warms up and is dropped, and
frame 0 of every pass (the prompted frame) is left out of the times.

Weights are random: no EfficientTAM checkpoint ships in any package, and random weights say "no object" on
every frame (STACK.md), so masks would be empty on both sides and agree vacuously. The object-score bias is
raised (`--object-bias`) before conversion, as STACK.md advises: masks then cover part of the frame with
logits near ±0.2, so mask IoU and logit SQNR against the eager fp32 tracker of the same weights test the
artifact's arithmetic — not tracking quality, which needs a checkpoint. Int8 artifacts are calibrated on
bikes.mp4 (`--calib builtin`), the clip timed here: their IoU is on the calibration clip.

`--ort-settings` adds a table for the first model: its ONNX fp32 tracker at 1 and 2 threads with the
intra-op pool spinning or not, beside eager at 1 and 2 threads (the figures behind
converters/targets/onnx/runner.py's default).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from benchmarks.machine import describe_machine, load_average
from benchmarks.report import Table, publish
from benchmarks.timing import set_threads

EXAMPLE = (
    "OMP_WAIT_POLICY=PASSIVE python -m benchmarks.suites.tracker_fps --models ti_512,ti_512_1,ti_512_2,s_512,"
    "s_512_1,s_512_2 --frames 5 --rounds 3 --threads 2 --int8 ti_512,s_512 --ort-settings --out benchmarks/results/"
)
PARTS = ("image_encoder", "memory_attention", "prompt_mask_decoder", "memory_encoder", "loop")
SHORT = {"image_encoder": "enc", "memory_attention": "mem attn", "prompt_mask_decoder": "dec",
         "memory_encoder": "mem enc", "loop": "loop"}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.suites.tracker_fps",
        description="Track bikes.mp4 with eager and converted EfficientTAM trackers, round-robin, timing every "
        "unit inside the loop; FPS, per-unit ms and mask IoU against eager fp32; writes NAME.json and NAME.md.",
        epilog=f"example:\n  {EXAMPLE}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", default="ti_512,ti_512_1,ti_512_2,s_512,s_512_1,s_512_2", help="variants")
    parser.add_argument("--int8", default="", help="variants that also get an ONNX int8 bundle (PTQ W8A8; slow)")
    parser.add_argument("--frames", type=int, default=5, help="frames per pass, the prompted one included")
    parser.add_argument("--rounds", type=int, default=2, help="passes per tracker, the first one dropped")
    parser.add_argument("--threads", type=int, default=2, help="threads for torch and onnxruntime (default 2)")
    parser.add_argument("--object-bias", type=float, default=20.0, help="object-score bias of the random model")
    parser.add_argument("--ort-settings", action="store_true", help="threads × spinning table for the first model")
    parser.add_argument("--workdir", type=Path, default=None, help="keep bundles here and reuse them")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="where results go")
    parser.add_argument("--name", default="tracker_fps", help="results file stem (default tracker_fps)")
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.int8 = [m for m in args.int8.split(",") if m]
    if args.frames < 2 or args.rounds < 2:
        parser.error("need --frames >= 2 (frame 0 is the prompt) and --rounds >= 2 (round 1 warms up)")
    return args


def build(variant: str, bias: float) -> torch.nn.Module:
    from edgevit.pipeline import Recipe, build_model

    model = build_model(Recipe(model="efficienttam", variant=variant, seed=0))
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(bias)
    return model


def bundle(model: torch.nn.Module, variant: str, precision: str, work: Path, console: Console) -> Path:
    """The ONNX bundle of `model` (reused from `work` when a previous run left it there)."""
    from edgevit.pipeline import QuantConfig, Recipe, run_model

    out = work / f"{variant}-{precision}"
    if (out / "manifest.json").is_file():
        return out
    int8 = precision == "int8"  # the quant plan sets the bits; a float precision would contradict it
    passes = (QuantConfig("ptq", "8"),) if int8 else ()
    recipe = Recipe(
        model="efficienttam", variant=variant, targets=("onnx",), precision=None if int8 else "fp32", passes=passes
    )
    started = time.perf_counter()
    run_model(model, recipe, out=out)
    console.print(f"{variant}: onnx {precision} bundle in {time.perf_counter() - started:.0f} s")
    return out


def ort_tracker(path: Path, threads: int, spinning: bool) -> Any:
    """The bundle's ONNX tracker with the intra-op pool spinning or not (bundle_tracker uses the default)."""
    from converters.bundle import artifact_for, read_manifest
    from converters.targets.onnx.runner import OnnxRuntimeRunner
    from edgevit.video.assemble import config_from_manifest
    from edgevit.video.tracker import UNIT_NAMES, Tracker

    manifest = read_manifest(path)

    def runner(name: str):
        ort = OnnxRuntimeRunner(path / artifact_for(manifest, name, "onnx")["path"], threads, spinning)
        return lambda *xs: tuple(torch.from_numpy(o) for o in ort.run(*(x.numpy() for x in xs)))

    return Tracker(config_from_manifest(manifest["model"]["config"]), {n: runner(n) for n in UNIT_NAMES})


def race(trackers: dict[str, tuple[Any, int]], frames: list[np.ndarray], prompt: Any, rounds: int) -> dict:
    """Round-robin passes; per tracker: profile summary over measured frames and the last pass's results."""
    from edgevit.video.profile import FrameProfile

    names = list(trackers)
    merged = {n: FrameProfile() for n in names}
    results: dict[str, list] = {}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            tracker, threads = trackers[name]
            torch.set_num_threads(threads)
            profile = FrameProfile()
            timed = profile.attach(tracker)
            got = []
            for result in timed.track(profile.feed(frames), prompt, num_frames=len(frames)):
                profile.frame_done()
                got.append(result)
            if r > 0:
                merged[name].frames += profile.frames[1:]
            results[name] = got
    return {n: (merged[n].summary(skip=0), results[n]) for n in names}


def agreement(reference: list, got: list) -> dict[str, float]:
    from edgevit.video.assemble import mask_iou
    from quant.metrics import sqnr

    ious = [mask_iou(r.mask, g.mask) for r, g in zip(reference, got, strict=True)]
    sqnrs = [sqnr(r.mask_logits, g.mask_logits) for r, g in zip(reference, got, strict=True)]
    return {
        "iou_mean": float(np.mean(ious)),
        "iou_min": float(np.min(ious)),
        "sqnr_mean_db": float(np.mean(sqnrs)),
        "reference_area": float(np.mean([r.mask.mean() for r in reference])),
    }


def run_variant(variant: str, args: argparse.Namespace, frames: list, prompt: Any, work: Path, console: Console):
    from edgevit.video.assemble import bundle_tracker, eager_tracker

    model = build(variant, args.object_bias)
    trackers = {"eager fp32": (eager_tracker(model), args.threads)}
    for precision in ("fp32", "int8") if variant in args.int8 else ("fp32",):
        path = bundle(model, variant, precision, work, console)
        trackers[f"onnx {precision}"] = (bundle_tracker(path, "onnx", args.threads)[0], args.threads)
    console.print(f"{variant}: {len(trackers)} trackers × {args.rounds} passes × {len(frames)} frames")
    raced = race(trackers, frames, prompt, args.rounds)
    reference = raced["eager fp32"][1]
    rows = {name: {"profile": prof, **agreement(reference, got)} for name, (prof, got) in raced.items()}
    return {"variant": variant, "trackers": rows}


def ort_settings(variant: str, args: argparse.Namespace, frames: list, prompt: Any, work: Path, console: Console):
    from edgevit.video.assemble import eager_tracker

    model = build(variant, args.object_bias)
    path = bundle(model, variant, "fp32", work, console)
    trackers = {f"eager {t}t": (eager_tracker(model), t) for t in (1, 2)}
    for threads in (1, 2):
        for spinning in (True, False):
            trackers[f"onnx {threads}t spin {'on' if spinning else 'off'}"] = (
                ort_tracker(path, threads, spinning),
                threads,
            )
    console.print(f"{variant}: runtime settings, {len(trackers)} trackers × {args.rounds} passes")
    raced = race(trackers, frames, prompt, args.rounds)
    return {name: prof for name, (prof, _) in raced.items()}


def fps_table(results: list[dict], frames: int) -> Table:
    columns = ["variant", "tracker", "FPS", "frame ms", "p90 ms"]
    columns += [f"{SHORT[p]} ms (%)" for p in PARTS] + ["mean IoU", "min IoU", "SQNR dB"]
    table = Table(f"EfficientTAM trackers on bikes.mp4 ({frames} frames a pass): FPS and ms per unit", columns)
    for res in results:
        for name, row in res["trackers"].items():
            prof = row["profile"]
            cells = [f"{prof['units'][p]['median_ms']:.1f} ({100 * prof['units'][p]['share']:.0f})" for p in PARTS]
            sq = row["sqnr_mean_db"]
            table.rows.append(
                [res["variant"], name, prof["fps"], prof["frame"]["median_ms"], prof["frame"]["p90_ms"], *cells,
                 round(row["iou_mean"], 4), round(row["iou_min"], 4), "inf" if sq == float("inf") else round(sq, 1)]
            )  # fmt: skip
    table.notes += [
        "ms: median over the measured frames (frame 0 and the warm-up pass left out); (%) the unit's share of "
        "the frame time summed over frames; loop = frame minus units (resize, memory bank, mask choice, upsampling).",
        "IoU / SQNR: masks and mask logits against the eager fp32 tracker of the same random weights "
        "(object-score bias raised so masks are not empty); they check arithmetic, not tracking quality.",
    ]
    return table


def settings_table(variant: str, profiles: dict[str, dict]) -> Table:
    table = Table(
        f"Runtime settings, {variant}: threads × onnxruntime intra-op spinning (same frames, round-robin)",
        ["tracker", "FPS", "frame ms", "p90 ms", *[f"{SHORT[p]} ms" for p in PARTS]],
    )
    for name, prof in profiles.items():
        units = [prof["units"][p]["median_ms"] for p in PARTS]
        table.rows.append([name, prof["fps"], prof["frame"]["median_ms"], prof["frame"]["p90_ms"], *units])
    return table


def main(argv: list[str] | None = None) -> int:
    from edgevit.data.video import read_frames, sample_video
    from edgevit.video.calibration import centre_click

    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 220)
    threads = set_threads(args.threads)
    machine = describe_machine()
    started = time.perf_counter()
    frames = list(read_frames(sample_video("bikes"), args.frames))
    prompt = centre_click(frames[0])
    work = args.workdir or Path(tempfile.mkdtemp(prefix="edgevit-tracker-fps-"))
    work.mkdir(parents=True, exist_ok=True)
    settings = ort_settings(args.models[0], args, frames, prompt, work, console) if args.ort_settings else None
    results = [run_variant(v, args, frames, prompt, work, console) for v in args.models]
    tables = [fps_table(results, args.frames)]
    if settings is not None:
        tables.append(settings_table(args.models[0], settings))
    summary = [
        f"Random weights, object-score bias {args.object_bias} (no checkpoint ships; STACK.md); bikes.mp4, "
        f"{args.frames} frames a pass, centre click; {args.rounds - 1} measured pass(es) per tracker after 1 warm-up.",
        f"Threads: {threads}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; load "
        f"{machine['load_average']} → {load_average()}; whole run {time.perf_counter() - started:.0f} s.",
    ]
    data = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "variants": results,
        "ort_settings": settings,
    }
    publish(
        args.out,
        args.name,
        title="EfficientTAM tracker FPS",
        machine=machine,
        tables=tables,
        summary=summary,
        data=data,
        console=console,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
