"""What the suites' command lines share: comma-separated flags, and a console that backends cannot shred.

Converters and runtimes print progress bars, deprecation warnings and, from C++, cpuinfo complaints straight
to file descriptors 1 and 2. A suite keeps its console on its own duplicate of the original stdout and sends
the descriptors to a log while a backend works (`backend_output_to`), so the progress display stays whole.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console


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
