"""The command line: measure, tabulate, judge the goal, write benchmarks/results/quant_w4.{md,json}."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.cli import artifact_dir, backend_output_to, comma_list, publish_results, suite_console, suite_parser
from benchmarks.machine import DEFAULT_DISTRIBUTIONS, describe_machine, load_average
from benchmarks.suites.quant_w4.measure import MODEL, measure
from benchmarks.suites.quant_w4.report import goal_lines, table
from benchmarks.timing import set_threads

PEERS = ("ort", "torchao", "aeq", "coreml")
EXAMPLE = "OMP_WAIT_POLICY=PASSIVE python -m benchmarks.suites.quant_w4 --group-sizes 32 --rounds 8"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = suite_parser(
        "python -m benchmarks.suites.quant_w4",
        "4-bit weights on DINOv2-S: onnxruntime MatMulNBits (default/RTN/GPTQ/HQQ), torchao int4, AI Edge "
        "Quantizer blockwise int4, coremltools 4-bit palettes and ours, side by side on held-out images; writes "
        "NAME.json and NAME.md under --out.",
        name="quant_w4",
        threads=1,
        example=EXAMPLE,
    )
    add = parser.add_argument
    add("--group-sizes", type=comma_list, default=["32"], help="comma-separated group sizes (default 32)")
    add("--peers", type=comma_list, default=list(PEERS), help=f"peers to run (default {','.join(PEERS)})")
    add("--targets", type=comma_list, default=["onnx", "executorch", "tflite"], help="targets ours lower to")
    add("--no-ours", action="store_true", help="run the peers only")
    add("--budget-minutes", type=float, default=float("inf"), help="methods not started by then are rows saying so")
    add("--calib-images", type=int, default=16, help="calibration images (default 16)")
    add("--eval-images", type=int, default=16, help="held-out images (default 16)")
    add("--frames", type=int, default=14, help="video frames per clip among the images (default 14)")
    add("--work-threads", type=int, default=2, help="threads while quantizing and scoring (default 2)")
    add("--warmup", type=int, default=2, help="untimed interleaved rounds (default 2)")
    add("--rounds", type=int, default=8, help="timed interleaved rounds, 0 to skip timing (default 8)")
    add("--artifacts", type=Path, default=None, help="keep the artifacts in this folder (default: temporary)")
    add("--show-backend-output", action="store_true", help="let the peers print to the console")
    args = parser.parse_args(argv)
    args.group_sizes = [int(g) for g in args.group_sizes]
    unknown = sorted(set(args.peers) - set(PEERS))
    if unknown:
        parser.error(f"unknown peer {unknown[0]!r}; valid: {', '.join(PEERS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = suite_console(200)
    machine = describe_machine((*DEFAULT_DISTRIBUTIONS, "ai-edge-quantizer", "torchao"))
    log = None if args.show_backend_output else Path(tempfile.gettempdir()) / f"edgevit-quant-w4-{os.getpid()}.log"
    if log:
        console.print(f"backend output goes to {log}", style="dim")
    load_before, started = load_average(), time.perf_counter()
    set_threads(args.work_threads)
    artifacts = artifact_dir(args.artifacts, "edgevit-quant-w4-")
    with artifacts as directory, backend_output_to(log), contextlib.redirect_stdout(sys.stderr):
        subject, run, timings = measure(args, directory)
    summary = goal_lines(run.rows) + [
        f"Timing: {args.rounds} interleaved rounds after {args.warmup} warm-up rounds, {args.threads} thread(s) for "
        f"torch and every runtime; quantization and scoring on {args.work_threads} thread(s).",
        f"The machine is shared with other jobs: 1-minute load average {load_before[0]} → {load_average()[0]} on "
        f"{os.cpu_count()} cores; ratios of interleaved medians hold better than absolute ms.",
        f"Run took {time.perf_counter() - started:.0f} s; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}.",
    ]
    publish_results(
        args,
        title="W4: group-wise 4-bit weights, ours against the peers",
        machine=machine,
        tables=[table(run.rows, MODEL)],
        summary=summary,
        data={
            "model": MODEL,
            "sources": subject.sources,
            "calibration_images": len(subject.calib),
            "held_out_images": len(subject.held_out),
            "group_sizes": args.group_sizes,
            "rows": run.rows,
            "timings": timings,
        },
        console=console,
    )
    return 0
