"""Keep backend chatter (litert-torch stage logs, Core ML progress bars, exporter warnings) out of the terminal.

The backends print from C++ and Python alike, so only redirecting the process's file descriptors catches
everything; the log is kept for whoever needs it, and our own progress bar writes to a saved copy of stderr.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


@contextmanager
def backend_output_to_log(prefix: str = "edgevit") -> Iterator[tuple[Path, TextIO]]:
    """Yield (log path, a text stream on the real stderr); fds 1 and 2 point at the log meanwhile."""
    fd, name = tempfile.mkstemp(prefix=f"{prefix}-", suffix=".log")
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    real_err = os.fdopen(os.dup(saved_err), "w", buffering=1)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield Path(name), real_err
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        real_err.close()
