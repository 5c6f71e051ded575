"""Tracker FPS and where each frame's milliseconds go, for EfficientTAM variants × runtimes, side by side.

Every tracker of one variant tracks the same frames in one run: the official predictor (PyPI
`efficient-track-anything`, imported as `sam2`, built as benchmarks/peers/efficienttam_official.py builds it and
loaded with the very weights of ours), our eager fp32 tracker, eager with bfloat16 autocast (`--bf16`), the ONNX
fp32 bundle and the ONNX int8 bundle (`--int8`; PTQ W8A8 of all four units, memory attention included, through
the QuantPlan). Ours run with a `FrameProfile` attached, so the per-unit times are the ones the loop pays (runtime
tensor conversions included) and "loop" is its own Python; the official predictor is timed per frame it yields
(its frames are decoded and resized up front by `init_state`, outside the clock). Trackers run round-robin, one
pass each per round with a rotating start, so the machine's load drifts onto all alike: on a shared machine read
the ratios within a run. The first round warms up and is dropped, and frame 0 of every pass (the prompted frame)
is left out of the times.

Weights are random: no EfficientTAM checkpoint ships in any package, and random weights say "no object" on
every frame (STACK.md). The object-score bias is raised (`--object-bias`) before conversion, as STACK.md advises:
masks then cover part of the frame, so mask IoU and logit SQNR against the eager fp32 tracker of the same weights
test the artifact's arithmetic — not tracking quality, which needs a checkpoint. Int8 bundles are calibrated on
bikes.mp4 (`--calib builtin`); the trackers are timed and compared on `--clip` (bigbuckbunny.mp4 by default), a
clip the int8 grids were not fitted to.

`--ort-settings` adds two tables for the first variant: its ONNX fp32 tracker at 1 and 2 threads, the intra-op
pool spinning or not and IO binding on or off, beside eager at 1 and 2 threads (the figures behind
converters/targets/onnx/runner.py's defaults); and each unit's call time with and without IO binding, interleaved.
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

from benchmarks.cli import publish_results, run_conditions, suite_parser
from benchmarks.machine import describe_machine
from benchmarks.suites.tracker_fps.tables import MIXED, OFFICIAL, PARTS, fps_table, goal_lines, settings_table
from benchmarks.timing import interleaved, set_threads

EXAMPLE = (
    "OMP_WAIT_POLICY=PASSIVE python -m benchmarks.suites.tracker_fps --models ti_512,ti_512_1,ti_512_2,s_512,"
    "s_512_1,s_512_2,ti,ti_1 --int8 all --official --bf16 --frames 5 --frames-1024 3 --threads 2 --ort-settings "
    "--out benchmarks/results/"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = suite_parser(
        "python -m benchmarks.suites.tracker_fps",
        "Track a clip with the official predictor and our eager and converted EfficientTAM trackers, round-robin, "
        "timing every unit inside the loop; FPS, per-unit ms and mask IoU against eager fp32; writes NAME.json "
        "and NAME.md.",
        name="tracker_fps",
        threads=2,
        example=EXAMPLE,
    )
    parser.add_argument("--models", default="ti_512,ti_512_1,ti_512_2,s_512,s_512_1,s_512_2", help="variants")
    parser.add_argument("--onnx", default="all", help="variants that get an ONNX fp32 bundle (default all)")
    parser.add_argument("--int8", default="", help="variants that also get an ONNX int8 bundle, or 'all' (slow)")
    parser.add_argument("--official", action="store_true", help="add the official predictor's eager tracker")
    parser.add_argument("--bf16", action="store_true", help="add eager in bfloat16 autocast (encoder, memory units)")
    parser.add_argument("--clip", default="bigbuckbunny", help="packaged clip timed and compared (not bikes)")
    parser.add_argument("--frames", type=int, default=5, help="frames per pass, the prompted one included")
    parser.add_argument("--frames-1024", type=int, default=3, help="frames per pass for 1024 px variants")
    parser.add_argument("--rounds", type=int, default=2, help="passes per tracker, the first one dropped")
    parser.add_argument("--object-bias", type=float, default=20.0, help="object-score bias of the random model")
    parser.add_argument("--ort-settings", action="store_true", help="threads × spinning × IO binding tables")
    parser.add_argument("--io-binding", action="store_true", help="only the per-unit IO binding table")
    parser.add_argument("--workdir", type=Path, default=None, help="keep bundles here and reuse them")
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.onnx, args.int8 = (
        args.models if v == "all" else [m for m in v.split(",") if m] for v in (args.onnx, args.int8)
    )
    if min(args.frames, args.frames_1024) < 2 or args.rounds < 2:
        parser.error("need --frames/--frames-1024 >= 2 (frame 0 is the prompt) and --rounds >= 2 (round 1 warms up)")
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


def ort_tracker(
    path: Path, threads: int, spinning: bool, io_binding: bool = False, units_from: dict[str, Path] | None = None
) -> Any:
    """The bundle's ONNX tracker with the given runtime settings (bundle_tracker uses the defaults); `units_from`
    takes the named units from other bundles of the same variant (e.g. int8 with the fp32 memory encoder)."""
    from converters.bundle import artifact_for, read_manifest
    from converters.targets.onnx.runner import OnnxRuntimeRunner
    from edgevit.video.assemble import config_from_manifest
    from edgevit.video.tracker import UNIT_NAMES, Tracker

    bundles = {n: (units_from or {}).get(n, path) for n in UNIT_NAMES}

    def runner(name: str):
        file = bundles[name] / artifact_for(read_manifest(bundles[name]), name, "onnx")["path"]
        ort = OnnxRuntimeRunner(file, threads, spinning, io_binding)
        return lambda *xs: tuple(torch.from_numpy(o) for o in ort.run(*(x.numpy() for x in xs)))

    config = read_manifest(path)["model"]["config"]
    return Tracker(config_from_manifest(config), {n: runner(n) for n in UNIT_NAMES})


class Official:
    """The official video predictor holding our model's weights (strict load), timed per frame it yields."""

    def __init__(self, model: torch.nn.Module, folder: Path) -> None:
        # Test-only code builds the official predictor (the package ships no configs); the suite reuses it.
        from benchmarks.peers.efficienttam_official import build_reference

        cfg = model.cfg
        size = {192: "ti", 384: "s"}[cfg.embed_dim]
        self.predictor = build_reference(size, cfg.image_size, memory=cfg.efficient_memory)
        self.predictor.load_state_dict(model.state_dict(), strict=True)
        self.folder = folder

    def track(self, prompt: Any) -> tuple[list[float], list[Any]]:
        """(seconds per yielded frame, one FrameResult per frame) for one click prompt on frame 0."""
        from edgevit.video.tracker import FrameResult

        seconds, results = [], []
        with torch.inference_mode():
            state = self.predictor.init_state(str(self.folder))
            points = np.array(prompt.points, dtype=np.float32)
            self.predictor.add_new_points(state, 0, 1, points, np.array(prompt.labels, dtype=np.int32))
            start = time.perf_counter()
            for idx, _, masks in self.predictor.propagate_in_video(state):
                seconds.append(time.perf_counter() - start)
                results.append(FrameResult(idx, masks[0, 0].clone().float(), float("nan")))
                start = time.perf_counter()
        return seconds, results


def race(trackers: dict[str, tuple[Any, int]], frames: list[np.ndarray], prompt: Any, rounds: int, full: int) -> dict:
    """Round-robin passes; per tracker: the summary over measured frames (with `steady`, the frames from index
    `full` on, whose memory bank is full, or None when the clip is shorter) and the last pass's results."""
    from edgevit.video.profile import FrameProfile

    names = list(trackers)
    merged = {n: FrameProfile() for n in names}
    steady = {n: FrameProfile() for n in names}
    official: dict[str, list[float]] = {}
    results: dict[str, list] = {}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            tracker, threads = trackers[name]
            torch.set_num_threads(threads)
            if isinstance(tracker, Official):
                seconds, results[name] = tracker.track(prompt)
                if r > 0:
                    official.setdefault(name, []).extend(seconds[1:])
                    official.setdefault(f"{name} steady", []).extend(seconds[full:])
                continue
            profile = FrameProfile()
            timed = profile.attach(tracker)
            got = []
            for result in timed.track(profile.feed(frames), prompt, num_frames=len(frames)):
                profile.frame_done()
                got.append(result)
            if r > 0:
                merged[name].frames += profile.frames[1:]
                steady[name].frames += profile.frames[full:]
            results[name] = got
    out = {}
    for n in names:
        if n in official:
            summary, full_bank = frame_summary(official[n]), official[f"{n} steady"]
            summary["steady"] = frame_summary(full_bank) if full_bank else None
        else:
            summary = merged[n].summary(skip=0)
            summary["steady"] = steady[n].summary(skip=0) if steady[n].frames else None
        out[n] = (summary, results[n])
    return out


def frame_summary(seconds: list[float]) -> dict:
    """A tracker timed per frame only (the official predictor): FrameProfile's summary keys, units unknown."""
    ms = np.array(seconds) * 1e3
    median = float(np.median(ms))
    return {
        "frames_measured": len(ms),
        "units": dict.fromkeys(PARTS),
        "frame": {"median_ms": round(median, 2), "p90_ms": round(float(np.percentile(ms, 90)), 2),
                  "mean_ms": round(float(ms.mean()), 2)},
        "fps": round(1e3 / median, 3),
        "per_frame_ms": [round(v, 3) for v in ms],
    }  # fmt: skip


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


def run_variant(variant: str, args: argparse.Namespace, clip: tuple, work: Path, console: Console) -> dict:
    from edgevit.video.assemble import BF16_UNITS, bundle_tracker, eager_tracker

    folder, all_frames, prompt = clip
    model = build(variant, args.object_bias)
    frames = all_frames[: args.frames_1024 if model.cfg.image_size >= 1024 else args.frames]
    trackers: dict[str, tuple[Any, int]] = {}
    if args.official:
        sub = work / f"{args.clip}-{len(frames)}"  # the official predictor reads a folder of N.jpg
        if not sub.is_dir():
            sub.mkdir(parents=True)
            for i in range(len(frames)):
                (sub / f"{i}.jpg").hardlink_to(folder / f"{i}.jpg")
        trackers[OFFICIAL] = (Official(model, sub), args.threads)
    trackers["eager fp32"] = (eager_tracker(model), args.threads)
    if args.bf16:
        trackers["eager bf16"] = (eager_tracker(model, bf16=BF16_UNITS), args.threads)
    paths = {}
    for precision in [p for p, wanted in (("fp32", args.onnx), ("int8", args.int8)) if variant in wanted]:
        paths[precision] = bundle(model, variant, precision, work, console)
        trackers[f"onnx {precision}"] = (bundle_tracker(paths[precision], "onnx", args.threads)[0], args.threads)
    if len(paths) == 2:  # stop 17: ti_512_1's int8 memory encoder took 74 ms a frame, its fp32 one 40
        from converters.targets.onnx.runner import ALLOW_SPINNING

        fp32_encoder = {"memory_encoder": paths["fp32"]}
        mixed = ort_tracker(paths["int8"], args.threads, ALLOW_SPINNING, units_from=fp32_encoder)
        trackers[MIXED] = (mixed, args.threads)
    console.print(f"{variant}: {len(trackers)} trackers × {args.rounds} passes × {len(frames)} frames")
    raced = race(trackers, frames, prompt, args.rounds, model.cfg.num_maskmem)
    reference = raced["eager fp32"][1]
    rows = {name: {"profile": prof, **agreement(reference, got)} for name, (prof, got) in raced.items()}
    return {"variant": variant, "frames": len(frames), "trackers": rows}


def ort_settings(variant: str, args: argparse.Namespace, clip: tuple, work: Path, console: Console) -> dict:
    from edgevit.video.assemble import eager_tracker

    _, frames, prompt = clip
    frames = frames[: args.frames]
    model = build(variant, args.object_bias)
    path = bundle(model, variant, "fp32", work, console)
    trackers = {f"eager {t}t": (eager_tracker(model), t) for t in (1, 2)}
    for threads in (1, 2):
        trackers[f"onnx {threads}t spin on"] = (ort_tracker(path, threads, True), threads)
        for binding in (True, False):
            name = f"onnx {threads}t spin off{'' if binding else ', no IO binding'}"
            trackers[name] = (ort_tracker(path, threads, False, binding), threads)
    console.print(f"{variant}: runtime settings, {len(trackers)} trackers × {args.rounds} passes")
    raced = race(trackers, frames, prompt, args.rounds, model.cfg.num_maskmem)
    return {"trackers": {name: prof for name, (prof, _) in raced.items()}, "units": binding_calls(path, model, args)}


def binding_calls(path: Path, model: torch.nn.Module, args: argparse.Namespace, runs: int = 10) -> dict:
    """Each unit's ONNX call with and without IO binding, interleaved, on inputs recorded while tracking bikes."""
    from converters.bundle import artifact_for, read_manifest
    from converters.targets.onnx.runner import OnnxRuntimeRunner
    from edgevit.data.video import read_frames, sample_video
    from edgevit.video.calibration import record_unit_inputs

    manifest = read_manifest(path)
    seen = record_unit_inputs(model, read_frames(sample_video("bikes"), 3))
    rows = {}
    for name, calls in seen.items():
        inputs = [x.numpy() for x in calls[-1]]  # the last call: a filled memory bank
        file = path / artifact_for(manifest, name, "onnx")["path"]
        runners = {b: OnnxRuntimeRunner(file, args.threads, io_binding=b) for b in (True, False)}
        calls = {b: (lambda r=r, x=inputs: r.run(*x)) for b, r in runners.items()}
        stats = interleaved(calls, warmup=2, runs=runs)
        rows[name] = {"bound_ms": 1e3 * stats[True].median, "plain_ms": 1e3 * stats[False].median, "runs": runs}
    return rows


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TQDM_DISABLE", "1")  # the official predictor's progress bars (read when sam2 loads)
    from benchmarks.peers.efficienttam_official import write_jpgs
    from edgevit.data.video import read_frames, sample_video
    from edgevit.video.calibration import centre_click

    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 220)
    threads = set_threads(args.threads)
    machine = describe_machine()
    started = time.perf_counter()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="edgevit-tracker-fps-"))
    folder = work / args.clip
    folder.mkdir(parents=True, exist_ok=True)
    # every tracker reads the same JPEG-decoded pixels, the only input the official predictor takes
    frames = write_jpgs(folder, read_frames(sample_video(args.clip), max(args.frames, args.frames_1024)))
    clip = (folder, frames, centre_click(frames[0]))
    settings = None
    if args.ort_settings:
        settings = ort_settings(args.models[0], args, clip, work, console)
    elif args.io_binding:
        model = build(args.models[0], args.object_bias)
        path = bundle(model, args.models[0], "fp32", work, console)
        settings = {"trackers": {}, "units": binding_calls(path, model, args)}
    results = [run_variant(v, args, clip, work, console) for v in args.models]
    tables = [fps_table(results, args.clip)]
    if settings is not None:
        tables += settings_table(args.models[0], settings)
    summary = [
        f"Random weights, object-score bias {args.object_bias} (no checkpoint ships; STACK.md); {args.clip}.mp4 "
        f"({args.frames} frames a pass, {args.frames_1024} at 1024 px), centre click; {args.rounds - 1} measured "
        "pass(es) per tracker after 1 warm-up; int8 calibrated on bikes.mp4.",
        run_conditions(threads, machine["load_average"], started),
        *goal_lines(results),
    ]
    data = {"variants": results, "ort_settings": settings}
    publish_results(
        args,
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
