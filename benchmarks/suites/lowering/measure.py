"""What the lowering suite measures per model: warm-up and unit conversions per target, then timings."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress
from torch import nn

from benchmarks.cli import backend_output_to
from benchmarks.machine import load_average
from benchmarks.report import eager_flops
from benchmarks.timing import Stats, interleaved, set_threads
from converters import Artifact, ConversionError, DeployUnit, RuntimeUnavailableError, convert, load_runner

UNITS = ("image_encoder", "memory_attention", "prompt_mask_decoder", "memory_encoder")


def warm_up_target(target: str, precision: str, out_dir: Path) -> float:
    """Seconds to convert a one-layer unit: the backend's imports and first-call set-up, paid once a process."""
    gen = torch.Generator().manual_seed(0)
    unit = DeployUnit(
        "warmup", nn.Sequential(nn.Linear(8, 8), nn.GELU()).eval(), (torch.randn(1, 8, generator=gen),), ("x",), ("y",)
    )
    start = time.perf_counter()
    convert(unit, target, precision, out_dir)
    return time.perf_counter() - start


def conversion_record(unit: DeployUnit, target: str, precision: str, out_dir: Path) -> dict[str, Any]:
    """Convert one unit and summarise the outcome; a failure is a result to report, not a reason to stop."""
    start = time.perf_counter()
    try:
        artifact = convert(unit, target, precision, out_dir)
    except ConversionError as exc:
        return {"status": "failed", "error": str(exc), "wall_s": time.perf_counter() - start}
    return {
        "status": "ok",
        "wall_s": time.perf_counter() - start,
        **_artifact_summary(artifact),
    }


def _artifact_summary(a: Artifact) -> dict[str, Any]:
    sqnr = None if a.parity is None else {k: v.sqnr_db for k, v in a.parity.items()}
    return {
        "path": str(a.path),
        "precision": a.precision,
        "conversion_s": a.conversion_seconds,
        "size_mb": a.size_bytes / 1e6,
        "sqnr_db": sqnr,
        "min_sqnr_db": None if sqnr is None else min(sqnr.values()),
        "max_abs_diff": None if a.parity is None else max(v.max_abs_diff for v in a.parity.values()),
        "parity_note": a.parity_note,
        "facts": {k: v for k, v in a.facts.items() if k not in ("onnx_ops", "tflite_ops", "mil_ops")},
    }


def time_unit(
    unit: DeployUnit,
    records: dict[str, dict[str, Any]],
    threads: int,
    warmup: int,
    runs: int,
    on_round: Callable[[int], None] | None = None,
) -> tuple[dict[str, Stats], dict[str, str], dict[str, int]]:
    """Eager and every runnable artifact of `unit`, interleaved, all on `threads` threads; returns the stats,
    why a target did not run, and the thread count each peer reports (torch's, each runner's)."""
    arrays = tuple(x.detach().cpu().numpy() for x in unit.example_inputs)
    fns: dict[str, Callable[[], Any]] = {"eager": lambda: unit.run_eager(*unit.example_inputs)}
    skipped: dict[str, str] = {}
    used: dict[str, int] = {}
    for target, rec in records.items():
        if rec["status"] != "ok":
            continue
        try:
            runner = load_runner(target, Path(rec["path"]), num_threads=threads)
        except RuntimeUnavailableError as exc:
            skipped[target] = str(exc)
            continue
        fns[target] = lambda r=runner: r.run(*arrays)
        used[target] = runner.num_threads
    used["eager"] = set_threads(threads)["torch_intra_op"]  # after loading the runners: none can change it now
    return interleaved(fns, warmup=warmup, runs=runs, on_round=on_round), skipped, used


def run_model(
    name: str,
    args: argparse.Namespace,
    art_root: Path,
    log: Path | None,
    progress: Progress,
) -> dict[str, Any]:
    """Everything the suite measures for one model, as plain data."""
    import edgevit.models

    torch.manual_seed(0)
    model = edgevit.models.create(name).eval()
    units = [u for u in model.deploy_units() if u.name in args.units]
    flops = {u.name: eager_flops(lambda u=u: u.run_eager(*u.example_inputs)) for u in units}
    params = {u.name: sum(p.numel() for p in u.module.parameters()) for u in units}

    task = progress.add_task(f"{name}: convert", total=len(args.targets) * (len(units) + 1))
    warmups: dict[str, float | str] = {}
    conversions: dict[str, dict[str, dict[str, Any]]] = {u.name: {} for u in units}
    for target in args.targets:
        out_dir = art_root / name / target
        progress.update(task, description=f"{name}: {target} warm-up")
        with backend_output_to(log):
            try:
                warmups[target] = warm_up_target(target, args.precision, out_dir)
            except ConversionError as exc:
                warmups[target] = f"failed: {exc}"
        progress.advance(task)
        for unit in units:
            progress.update(task, description=f"{name}: {target} {unit.name}")
            with backend_output_to(log):
                conversions[unit.name][target] = conversion_record(unit, target, args.precision, out_dir)
            progress.advance(task)

    timings: dict[str, dict[str, Any]] = {u.name: {} for u in units}
    for threads in args.threads:
        for unit in units:
            task = progress.add_task(f"{name}: time {unit.name}, {threads} thread(s)", total=args.runs)
            load_before = load_average()
            with backend_output_to(log):
                stats, skipped, used = time_unit(
                    unit,
                    conversions[unit.name],
                    threads,
                    args.warmup,
                    args.runs,
                    lambda _, t=task: progress.advance(t),
                )
            timings[unit.name][threads] = {
                "stats": {k: v.to_dict() for k, v in stats.items()},
                "not_run": skipped,
                "threads_used": used,
                "load_average_before": load_before,
                "load_average_after": load_average(),
            }
    return {
        "model": name,
        "units": [u.name for u in units],
        "flops": flops,
        "parameters": params,
        "backend_warmup_s": warmups,
        "conversions": conversions,
        "timings": timings,
    }
