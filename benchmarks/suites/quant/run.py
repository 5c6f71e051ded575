"""A run of the quantization suite: every requested model and section, then the merged report."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks.cli import artifact_dir, backend_output_to, suite_console
from benchmarks.machine import DEFAULT_DISTRIBUTIONS, describe_machine
from benchmarks.report import print_tables, write_report
from benchmarks.suites.quant.deploy import deploy_jobs
from benchmarks.suites.quant.flags import parse_args
from benchmarks.suites.quant.goals import goals
from benchmarks.suites.quant.jobs import Job, one_line, run_job
from benchmarks.suites.quant.mixed import mixed_jobs
from benchmarks.suites.quant.report import tables
from benchmarks.suites.quant.results import load_previous, merge, run_notes, run_record
from benchmarks.suites.quant.subjects import Subject, loader
from benchmarks.suites.quant.uniform import uniform_jobs
from benchmarks.suites.quant.workspace import Workspace
from benchmarks.timing import set_threads

SECTION_JOBS: dict[str, Callable[[Workspace], list[Job]]] = {
    "uniform": uniform_jobs,
    "mixed": mixed_jobs,
    "deploy": deploy_jobs,
}


def run_subject(
    subject: Subject,
    sections: list[str],
    args: argparse.Namespace,
    directory: Path,
    progress: Progress | None = None,
    log: Path | None = None,
) -> dict[str, Any]:
    """Every requested section for one model: {"subject": facts, "sections": {name: {"rows", "seconds"}}}."""
    ws = Workspace(subject, directory, args)
    wanted = [s for s in sections if not (subject.latency_only and s != "deploy")]
    result: dict[str, Any] = {"subject": subject.describe(), "sections": {}}
    for section in wanted:
        jobs = SECTION_JOBS[section](ws)
        task = progress.add_task(f"{subject.name}: {section}", total=len(jobs)) if progress else None
        start, rows = time.perf_counter(), []
        for job in jobs:
            if progress is not None:
                progress.update(task, description=f"{subject.name}: {section}: {job.label}")
            with backend_output_to(log):
                rows.extend(run_job(job))
            if progress is not None:
                progress.advance(task)
        result["sections"][section] = {"rows": rows, "seconds": round(time.perf_counter() - start, 1)}
    return result


def measure(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """Every requested model and section, as plain data keyed by model name."""
    log = None if args.show_backend_output else Path(tempfile.gettempdir()) / f"edgevit-quant-{os.getpid()}.log"
    if log:
        console.print(f"backend output goes to {log}", style="dim")
    set_threads(args.work_threads)
    limits = (args.calib_images, args.eval_images)
    models: dict[str, Any] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with artifact_dir(args.artifacts, "edgevit-quant-") as art_root:
        with Progress(*columns, console=console, redirect_stdout=False, redirect_stderr=False) as progress:
            for name in args.models:
                task = progress.add_task(f"{name}: loading", total=None)
                try:
                    with contextlib.redirect_stdout(sys.stderr):
                        subject = loader(name, args.frames, limits, args.student_cache)()
                except Exception as exc:
                    console.print(f"[red]{name}: cannot load ({one_line(exc)}); skipped[/]")
                    continue
                finally:
                    progress.remove_task(task)
                models[name] = run_subject(subject, args.sections, args, art_root / name, progress, log)
    return models


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = suite_console(200)
    json_path = args.out.with_suffix(".json")
    previous, runs = ({}, []) if args.fresh else load_previous(json_path)
    if args.report_only:
        if not runs:
            console.print(f"[red]--report-only: no results in {json_path} to tabulate[/]")
            return 1
        machine = json.loads(json_path.read_text())["machine"]
        merged = previous
    else:
        machine = describe_machine((*DEFAULT_DISTRIBUTIONS, "ai-edge-quantizer", "torchao"))
        started = time.perf_counter()
        merged = merge(previous, measure(args, console))
        runs = [*runs, run_record(args, started, machine)]
    try:
        result_tables, summary = tables(merged), goals(merged) + run_notes(runs, machine)
    except Exception as exc:  # the measurements took minutes: keep them even if tabulating them fails
        console.print(f"[red]tables could not be built ({one_line(exc)}); writing the raw results only[/]")
        result_tables, summary = [], [f"tables could not be built: {one_line(exc)}"]
    json_file, md_file = write_report(
        args.out.parent,
        args.out.name,
        title="Quantization: edgevit's PTQ, MPTQ and Q-HyViT against the peers",
        machine=machine,
        tables=result_tables,
        summary=summary,
        data={"models": merged, "runs": runs},
    )
    print_tables(result_tables, console)
    for line in summary:
        console.print(f"• {line}")
    console.print(f"wrote {json_file} and {md_file}")
    return 0
