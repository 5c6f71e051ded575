"""The lowering suite's command line and run: measure every model, then write and print the report."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks.cli import comma_list, publish_results, suite_console, suite_parser
from benchmarks.machine import describe_machine, gemm_gflops, load_average
from benchmarks.suites.lowering.measure import UNITS, run_model
from benchmarks.suites.lowering.report import conversion_table, goals, latency_table, threading_warning
from converters import TARGETS

EXAMPLE = (
    "OMP_WAIT_POLICY=PASSIVE python -m benchmarks.suites.lowering --models efficienttam_ti_512,efficienttam_s_512 "
    "--targets onnx,executorch,tflite,coreml --runs 20 --threads 2 --out benchmarks/results/"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = suite_parser(
        "python -m benchmarks.suites.lowering",
        "Convert EfficientTAM's deploy units to each target and time every runnable artifact against eager "
        "PyTorch, side by side; writes NAME.json and NAME.md under --out.",
        name="lowering",
        example=EXAMPLE,
        epilog="A quick run: --models efficienttam_ti_512 --units image_encoder --runs 5.\n\n"
        "On cores shared with other jobs, run with OMP_WAIT_POLICY=PASSIVE in the environment: PyTorch's\n"
        "spin-waiting OpenMP threads otherwise make eager 3-30x slower on 2 threads than on 1 (recorded in the JSON).",
    )
    parser.add_argument("--models", default="efficienttam_ti_512,efficienttam_s_512", help="comma-separated")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, of {', '.join(TARGETS)}")
    parser.add_argument("--units", default=",".join(UNITS), help="comma-separated deploy unit names")
    parser.add_argument("--precision", default="fp32", help="precision for every target (default fp32)")
    parser.add_argument("--runs", type=int, default=20, help="timed rounds per unit (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds per unit first (default 3)")
    parser.add_argument(
        "--threads",
        default="2",
        help="thread count(s) for torch and every runtime, comma-separated to time each (default 2)",
    )
    parser.add_argument("--keep-artifacts", type=Path, default=None, help="keep converted files here")
    parser.add_argument(
        "--show-backend-output", action="store_true", help="let converters print (default: to a log file)"
    )
    args = parser.parse_args(argv)
    args.models = comma_list(args.models)
    args.targets = comma_list(args.targets)
    args.units = comma_list(args.units)
    try:
        args.threads = [int(t) for t in comma_list(args.threads)]
    except ValueError:
        parser.error(f"--threads takes integers, got {args.threads!r}")
    if unknown := [t for t in args.targets if t not in TARGETS]:
        parser.error(f"unknown target(s) {', '.join(unknown)}; valid: {', '.join(TARGETS)}")
    if unknown := [u for u in args.units if u not in UNITS]:
        parser.error(f"unknown unit(s) {', '.join(unknown)}; valid: {', '.join(UNITS)}")
    if args.runs < 1 or args.warmup < 0 or not args.threads or min(args.threads) < 1:
        parser.error("need --runs >= 1, --warmup >= 0, --threads >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = suite_console(220)
    art_root = args.keep_artifacts or Path(tempfile.mkdtemp(prefix="edgevit-lowering-"))
    log = None if args.show_backend_output else Path(tempfile.gettempdir()) / f"edgevit-{args.name}-{os.getpid()}.log"
    gemm_start = {t: gemm_gflops(threads=t) for t in args.threads}
    machine = describe_machine()
    console.print(
        "fp32 GEMM roof at start: "
        + ", ".join(f"{t} thread(s) {g['median_gflops']} GFLOP/s" for t, g in gemm_start.items())
        + f"; load {machine['load_average']}"
    )
    if log:
        console.print(f"backend output goes to {log}", style="dim")

    results = []
    started = time.perf_counter()
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            redirect_stdout=False,
            redirect_stderr=False,
        ) as progress:
            for name in args.models:
                results.append(run_model(name, args, art_root, log, progress))
    finally:
        if args.keep_artifacts is None:
            shutil.rmtree(art_root, ignore_errors=True)
    gemm_end = {t: gemm_gflops(threads=t) for t in args.threads}
    roofs = {t: max(gemm_start[t], gemm_end[t], key=lambda g: g["median_gflops"]) for t in args.threads}
    machine["gemm_fp32"] = roofs[max(args.threads)]
    peaks = {t: g["median_gflops"] for t, g in roofs.items()}

    tables = [conversion_table(results), latency_table(results, peaks, args)]
    summary = [
        *goals(results),
        f"Threads timed: {', '.join(map(str, args.threads))}; torch, each runner and ExecuTorch's process-wide "
        f"pool set to the same count. {args.runs} timed rounds after {args.warmup} "
        "warm-up rounds, peers interleaved round-robin with a rotating start.",
        "fp32 GEMM roof (median GFLOP/s, start → end of run): "
        + "; ".join(
            f"{t} thread(s) {gemm_start[t]['median_gflops']} → {gemm_end[t]['median_gflops']}" for t in args.threads
        )
        + f"; load {machine['load_average']} → {load_average()}. % peak uses the higher of the two.",
        "Core ML converts here but its prediction needs macOS: its rows have a conversion time and no latency.",
        *threading_warning(args.threads),
        f"Whole run {time.perf_counter() - started:.0f} s; weights random (no checkpoint ships in any package).",
    ]
    data = {"gemm_fp32": {"start": gemm_start, "end": gemm_end}, "models": results}
    publish_results(
        args,
        title="Lowering: EfficientTAM units, converted and timed against eager PyTorch",
        machine=machine,
        tables=tables,
        summary=summary,
        data=data,
        console=console,
    )
    return 0
