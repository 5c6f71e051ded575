"""Writing results atomically: into a temporary sibling folder, renamed into place only when complete."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgevit.errors import EdgevitError


def check_out(out: Path, force: bool) -> None:
    """Refuse an existing output before any slow work starts."""
    if Path(out).exists() and not force:
        raise EdgevitError(f"{out} already exists; pass --force to replace it or choose another --out")


@contextmanager
def atomic_dir(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `out`; on success it replaces `out`, on any error it is removed."""
    out = Path(out)
    check_out(out, force)
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    except OSError as exc:
        raise EdgevitError(f"cannot write into {parent}: {exc.strerror}; choose a writable --out") from None
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        tmp.rename(out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EdgevitError(f"writing {out} failed: {exc.strerror or exc}; nothing was left behind") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
