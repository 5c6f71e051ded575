"""What the suites' command lines share: the parser with `--out`/`--name` (and `--threads`), the last step that
publishes the results there, comma-separated flags, and a console that backends cannot shred.

Converters and runtimes print progress bars, deprecation warnings and, from C++, cpuinfo complaints straight
to file descriptors 1 and 2. A suite keeps its console on its own duplicate of the original stdout and sends
the descriptors to a log while a backend works (`backend_output_to`), so the progress display stays whole.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.machine import load_average
from benchmarks.report import publish

RESULTS = Path("benchmarks/results")


def suite_parser(
    prog: str, description: str, *, name: str, threads: int | None = None, example: str = "", epilog: str = ""
) -> argparse.ArgumentParser:
    """A suite's parser holding what every suite takes: `--out` and `--name` (the results files NAME.json and
    NAME.md under OUT, written by `publish_results`) and, given a default `threads`, `--threads`; the suite adds
    its own flags. `example` (a command line) and `epilog` are shown after the flags, as written."""
    example = f"example:\n  {example}" if example else ""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="\n\n".join(part for part in (example, epilog) if part) or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"where results go (default {RESULTS})")
    parser.add_argument("--name", default=name, help=f"results file stem (default {name})")
    if threads is not None:
        help_ = f"threads for torch and every runtime (default {threads})"
        parser.add_argument("--threads", type=int, default=threads, help=help_)
    return parser


def publish_results(
    args: argparse.Namespace, *, data: dict[str, Any] | None = None, **report: Any
) -> tuple[Path, Path]:
    """What every suite does last: `benchmarks.report.publish` (`report`: its title, machine, tables, summary,
    console) to `--out`/`--name`, with the command line it ran (`data["args"]`) beside the figures, so a results
    file says how to make it again."""
    return publish(args.out, args.name, data={"args": vars(args), **(data or {})}, **report)


def run_conditions(threads: Any, load_before: Sequence[float], started: float) -> str:
    """The summary line saying what the figures were measured under: threads, OpenMP's wait policy (spinning
    threads on shared cores slow eager PyTorch many times over), the load at start and end, the run's length."""
    return (
        f"Threads: {threads}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; load "
        f"{list(load_before)} → {load_average()}; whole run {time.perf_counter() - started:.0f} s."
    )


def comma_list(text: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated flag value."""
    return [s.strip() for s in text.split(",") if s.strip()]


def suite_console(width: int) -> Console:
    """A console on its own copy of stdout, `width` wide off a terminal.

    Off a terminal (a log file, CI) a fixed width keeps the tables from folding into columns of letters.
    """
    out = os.fdopen(os.dup(1), "w")
    return Console(file=out, width=None if out.isatty() else width)


@contextlib.contextmanager
def backend_output_to(log: Path | None) -> Iterator[None]:
    """Send file descriptors 1 and 2 to `log` (None: leave them alone).

    Redirecting the descriptors (not just sys.stdout) catches the C++ output too. The console writes to its
    own duplicate of the original stdout (`suite_console`).
    """
    if log is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with log.open("ab") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


@contextlib.contextmanager
def artifact_dir(keep: Path | None, prefix: str) -> Iterator[Path]:
    """Where a suite's artifacts go: the kept folder (`--artifacts`), or a temporary one removed afterwards."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
