"""Writing outputs so that a run never destroys what it should not: bundles, mask folders, checkpoint files.

An output is built in a hidden temporary sibling (`.NAME.tmp-XXXXXXXX`) and renamed into place only when
complete. Only a folder edgevit wrote (it holds the `.edgevit-output` marker, or a bundle manifest) is ever
replaced, and only with `--force`: the old one is renamed aside (`.NAME.old-XXXXXXXX`), the new one renamed in,
then the old one deleted, so a crash at any moment leaves the old output or the new one whole. The root, home
and working folders (and their ancestors) and any folder holding one of the run's inputs are refused.

A run claims `--out` with a lock file beside it (`.NAME.lock`, `fcntl.flock`, released by the kernel when the
process dies): a second run on the same `--out` is refused, and whoever holds the lock knows that any temporary
or aside sibling of `--out` belongs to a dead run, so it sweeps them (an aside whose replacement never landed is
put back). A command calls `check_out` before its slow work (that takes the claim and records the inputs) and
`atomic_dir`/`atomic_file` when it writes (they complete the claim and release it).
"""

from __future__ import annotations

import atexit
import datetime as dt
import errno
import fcntl
import importlib.metadata
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from converters.bundle.errors import BundleError
from converters.bundle.manifest import MANIFEST, SCHEMA

MARKER = ".edgevit-output"  # written into every output folder: what may be replaced with --force

PathLike = str | os.PathLike[str]


@dataclass
class _Claim:
    """This process's lock on one `--out`, and the inputs the run reads (an output may never hold them)."""

    out: Path
    lock: Path
    fd: int
    inputs: list[Path] = field(default_factory=list)
    writing: bool = False


_claims: dict[Path, _Claim] = {}


def check_out(out: PathLike, force: bool, inputs: Iterable[PathLike | None] = ()) -> None:
    """Refuse an `--out` folder that must not be written before any slow work starts, and claim it.

    `inputs` are the paths the run reads (video, checkpoint, bundle, calibration folder; None is skipped).
    The claim (a lock beside `out`) lasts until `atomic_dir` finishes, `release_claims` runs, or the process ends.
    """
    with _as_user_error(Path(out)):
        _claim_dir(Path(out), force, _existing(inputs), create_parent=False)


@contextmanager
def atomic_dir(out: PathLike, force: bool = False, inputs: Iterable[PathLike | None] = ()) -> Iterator[Path]:
    """Yield a temp folder beside `out`; on success it replaces `out`, on any error it is removed."""
    given = Path(out)
    with _as_user_error(given):
        claim = _claim_dir(given, force, _existing(inputs), create_parent=True)
    claim.writing = True
    try:
        tmp = _make_tmp_dir(claim.out)
        try:
            yield tmp
            _commit_dir(tmp, given, claim, force)
        except OSError as exc:
            raise BundleError(f"writing {given} failed: {exc.strerror or exc}; {given} was left as it was") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # already renamed into place after a success
    finally:
        _release(claim)


def check_file_out(out: PathLike, force: bool) -> None:
    """`check_out` for a command whose `--out` is one file: a folder there is refused, even with --force."""
    with _as_user_error(Path(out)):
        _claim_file(Path(out), force, create_parent=False)


@contextmanager
def atomic_file(out: PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temp file path beside `out` to write; on success it becomes `out` (replacing one only with force)."""
    given = Path(out)
    with _as_user_error(given):
        claim = _claim_file(given, force, create_parent=True)
    claim.writing = True
    tmp = claim.out.parent / f".{claim.out.name}.tmp-{_token()}"
    try:
        yield tmp
        _commit_file(tmp, given, claim.out, force)
    except OSError as exc:
        raise BundleError(f"writing {given} failed: {exc.strerror or exc}; {given} was left as it was") from None
    finally:
        tmp.unlink(missing_ok=True)
        _release(claim)


def release_claims() -> None:
    """Drop every claim this process holds (a command that failed between `check_out` and writing)."""
    for claim in list(_claims.values()):
        _release(claim)


atexit.register(release_claims)


def is_edgevit_output(folder: Path) -> bool:
    """A folder edgevit wrote: it holds the marker, or (bundles written before the marker) a bundle manifest."""
    if (folder / MARKER).is_file():
        return True
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("schema") == SCHEMA


@contextmanager
def _as_user_error(given: Path) -> Iterator[None]:
    """A folder we may not list or write (permissions, a full disk) is the user's to fix: one line."""
    try:
        yield
    except OSError as exc:
        raise BundleError(f"cannot use --out {given}: {exc.strerror or exc}; choose another --out") from None


def _existing(inputs: Iterable[PathLike | None]) -> list[Path]:
    return [Path(p).resolve() for p in inputs if p is not None and os.path.exists(p)]


def _token() -> str:
    """Eight characters from mkdtemp's alphabet, so temporaries and asides share one recognisable pattern."""
    return secrets.token_hex(4)


def _siblings(out: Path) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(out.name)}\.(tmp|old)-[a-z0-9_]{{8}}")


def _refusal(given: Path, out: Path, inputs: Iterable[Path]) -> str | None:
    """Why `out` (resolved) must never be written or replaced, whatever the flags; None when it may be."""
    cwd = Path.cwd().resolve()
    try:
        home = Path.home().resolve()
    except RuntimeError:  # no HOME and no password entry: there is no home folder to protect
        home = cwd
    if out == Path(out.anchor):
        why = "it is the root folder"
    elif out == home:
        why = "it is your home folder"
    elif out == cwd:
        why = "it is the working folder"
    elif cwd.is_relative_to(out):
        why = "it holds the working folder"
    elif home.is_relative_to(out):
        why = "it holds your home folder"
    else:
        held = [p for p in inputs if p.is_relative_to(out)]
        why = f"it holds this run's input {held[0]}" if held else None
    return f"refusing --out {given}: {why}; choose a new folder for the output" if why else None


def _claim_dir(given: Path, force: bool, inputs: list[Path], create_parent: bool) -> _Claim:
    if given.is_symlink():
        raise BundleError(f"--out {given} is a symbolic link; pass the folder it points to, or another --out")
    out = given.resolve()
    held = _claims.get(out)
    inputs = list(dict.fromkeys([*(held.inputs if held else []), *inputs]))
    why = _refusal(given, out, inputs)  # before the lock: nothing is created beside a folder that is refused
    if why:
        raise BundleError(why)
    claim, new = _claim(out, given, create_parent)
    claim.inputs = inputs
    try:
        if new:
            _sweep(out, folders=True)
        _check_existing_dir(given, out, force)
    except BaseException:
        if new:
            _release(claim)
        raise
    return claim


def _check_existing_dir(given: Path, out: Path, force: bool) -> None:
    if not os.path.lexists(out):
        return
    if not out.is_dir():
        raise BundleError(f"--out {given} is a file and the output is a folder; choose another --out")
    if any(out.iterdir()) and not is_edgevit_output(out):
        raise BundleError(
            f"refusing --out {given}: it is a folder edgevit did not write (no {MARKER} marker or bundle manifest); "
            "choose a new folder for the output"
        )
    if not force:
        raise BundleError(f"{given} already exists; pass --force to replace it or choose another --out")


def _claim_file(given: Path, force: bool, create_parent: bool) -> _Claim:
    out = given.resolve()
    if out.is_dir():
        raise BundleError(f"--out {given} is a folder; the output is one file (e.g. --out {out.name or 'out'}.pt)")
    claim, new = _claim(out, given, create_parent)
    try:
        if new:
            _sweep(out, folders=False)
        if os.path.lexists(out) and not force:
            raise BundleError(f"{given} already exists; pass --force to replace it or choose another --out")
    except BaseException:
        if new:
            _release(claim)
        raise
    return claim


def _claim(out: Path, given: Path, create_parent: bool) -> tuple[_Claim, bool]:
    """This process's claim on `out`, and whether this call took its lock (a claim made before the parent
    folder existed holds no lock: nothing can be there yet; the writer locks once it has created the parent)."""
    claim = _claims.get(out)
    if claim is not None and claim.writing:
        raise BundleError(f"{given} is already being written by this run; choose another --out")
    if claim is not None and (claim.fd >= 0 or not create_parent):
        return claim, False
    if not out.parent.is_dir():
        if not create_parent:
            claim = _claims[out] = _Claim(out, out.parent / f".{out.name}.lock", -1)
            return claim, False
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BundleError(f"cannot create {out.parent}: {exc.strerror}; choose a writable --out") from None
    claim = _claims[out] = _lock(out, given)
    return claim, True


def _lock(out: Path, given: Path) -> _Claim:
    """flock a hidden sibling; retried if a finishing holder unlinked the file between our open and our lock."""
    lock = out.parent / f".{out.name}.lock"
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise BundleError(f"cannot write into {out.parent}: {exc.strerror}; choose a writable --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip()
            os.close(fd)
            who = f" ({holder})" if holder else ""
            raise BundleError(
                f"another edgevit run{who} is writing {given}; wait for it to finish or choose another --out"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
    return _Claim(out, lock, fd)


def _release(claim: _Claim) -> None:
    if _claims.get(claim.out) is claim:
        del _claims[claim.out]
    if claim.fd >= 0:
        claim.lock.unlink(missing_ok=True)  # while still locked: a waiting opener re-checks the inode
        os.close(claim.fd)
        claim.fd = -1


def _sweep(out: Path, folders: bool) -> None:
    """Under the lock, every temporary/aside sibling of `out` is a dead run's: delete it, or put an aside back."""
    pattern = _siblings(out)
    for path in sorted(out.parent.iterdir()):
        found = pattern.fullmatch(path.name)
        if not found or path.is_symlink():
            continue
        if not folders:
            if path.is_file():
                path.unlink(missing_ok=True)
            continue
        if not path.is_dir() or (any(path.iterdir()) and not is_edgevit_output(path)):
            continue  # not something edgevit made: leave it
        if found[1] == "old" and not os.path.lexists(out):
            path.rename(out)  # killed between rename-aside and rename-in: the old output comes back
        else:
            shutil.rmtree(path, ignore_errors=True)


def _version() -> str:
    """The installed edgevit distribution (this package ships in it), read without importing `edgevit`."""
    try:
        return importlib.metadata.version("edgevit")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _make_tmp_dir(out: Path) -> Path:
    marker = {  # made before the folder exists: nothing slow runs while a half-made temporary could be left
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "edgevit": _version(),
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise BundleError(f"cannot write into {out.parent}: {exc.strerror}; choose a writable --out") from None
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; an output gets the user's normal permissions
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BundleError(f"cannot write into {out.parent}: {exc.strerror}; choose a writable --out") from None
    except BaseException:  # Ctrl-C between mkdtemp and here: the caller never sees `tmp`, so remove it now
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _appeared(given: Path) -> BundleError:
    return BundleError(
        f"{given} appeared while this run worked and was left as it is; this run's output was discarded "
        "(pass --force to replace it)"
    )


def _commit_dir(tmp: Path, given: Path, claim: _Claim, force: bool) -> None:
    """Rename `tmp` to `out`; an existing `out` is replaced (aside, in, delete) only with force and if replaceable."""
    out = claim.out
    if not os.path.lexists(out):
        try:
            os.rename(tmp, out)  # an empty folder that appeared meanwhile is replaced: nothing is lost
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise _appeared(given) from None
            raise
        return
    if not force:
        raise _appeared(given)
    why = _refusal(given, out, claim.inputs)
    if why:
        raise BundleError(why)
    _check_existing_dir(given, out, force)
    aside = out.parent / f".{out.name}.old-{_token()}"
    os.rename(out, aside)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(aside, out)
        raise
    shutil.rmtree(aside, ignore_errors=True)  # if this fails, the next run on `out` sweeps it


def _commit_file(tmp: Path, given: Path, out: Path, force: bool) -> None:
    if force:
        os.replace(tmp, out)
        return
    try:
        os.link(tmp, out)  # atomic and never replaces: fails if a file appeared meanwhile
    except FileExistsError:
        raise _appeared(given) from None
    except OSError:  # a file system without hard links
        if os.path.lexists(out):
            raise _appeared(given) from None
        os.rename(tmp, out)
