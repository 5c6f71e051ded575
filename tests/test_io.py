"""Outputs never destroy a user's files: what `atomic_dir`/`atomic_file` refuse, replace, lock and sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from converters.bundle import output
from converters.bundle.errors import BundleError
from converters.bundle.output import MARKER, atomic_dir, atomic_file, check_out


def write_output(out: Path, name: str = "old.txt", force: bool = False) -> None:
    with atomic_dir(out, force) as tmp:
        (tmp / name).write_text(name)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_output_is_marked_with_normal_permissions_and_nothing_beside_it(tmp_path):
    out = tmp_path / "out"
    write_output(out)
    assert names(tmp_path) == ["out"]  # no temp folder, no lock file
    assert names(out) == [MARKER, "old.txt"]
    marker = json.loads((out / MARKER).read_text())
    assert marker["pid"] == os.getpid() and marker["edgevit"] and marker["created"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700


def test_existing_output_is_replaced_only_with_force(tmp_path):
    out = tmp_path / "out"
    write_output(out)
    with pytest.raises(BundleError, match="already exists; pass --force"):
        write_output(out, "new.txt")
    assert names(out) == [MARKER, "old.txt"]
    write_output(out, "new.txt", force=True)
    assert names(out) == [MARKER, "new.txt"] and names(tmp_path) == ["out"]


def test_old_bundle_without_marker_counts_as_an_output(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"schema": "edgevit.bundle", "schema_version": 1}))
    write_output(out, "new.txt", force=True)
    assert names(out) == [MARKER, "new.txt"]


def test_folder_edgevit_did_not_write_is_never_replaced(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(BundleError, match="edgevit did not write"):
        write_output(out, force=True)
    assert names(out) == ["cat.jpg"] and names(tmp_path) == ["photos"]


def test_file_at_out_is_never_replaced_by_a_folder(tmp_path):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    with pytest.raises(BundleError, match="is a file"):
        write_output(out, force=True)
    assert out.read_text() == "mine" and names(tmp_path) == ["notes.txt"]


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("cwd", "it is the working folder"),
        ("parent", "it holds the working folder"),
        ("home", "it is your home folder"),
        ("root", "it is the root folder"),
        ("input", "it holds this run's input"),
    ],
)
def test_protected_folders_are_refused_even_with_force(tmp_path, monkeypatch, where, reason):
    work, home, videos = tmp_path / "work", tmp_path / "home", tmp_path / "videos"
    for folder in (work, home, videos):
        folder.mkdir()
        (folder / MARKER).write_text("{}")  # even a marked folder: these are never outputs
        (folder / "keep.txt").write_text("keep")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    video = videos / "clip.mp4"
    video.write_bytes(b"video")
    out = {"cwd": Path("."), "parent": Path(".."), "home": Path("~").expanduser(), "root": Path("/")}.get(where, videos)
    before = {p: names(p) for p in (tmp_path, work, home, videos)}
    with pytest.raises(BundleError, match=reason):
        check_out(out, True, inputs=[video, None])
    with pytest.raises(BundleError, match=reason):
        with atomic_dir(out, True, inputs=[video]) as tmp:
            (tmp / "x").write_text("x")
    assert {p: names(p) for p in (tmp_path, work, home, videos)} == before


def test_folder_appearing_during_a_run_is_kept_without_force(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(BundleError, match="appeared while this run worked"):
        with atomic_dir(out) as tmp:
            (tmp / "new.txt").write_text("new")
            out.mkdir()
            (out / "theirs.txt").write_text("theirs")
    assert names(out) == ["theirs.txt"] and names(tmp_path) == ["out"]


def test_failed_rename_in_puts_the_old_output_back(tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_output(out)
    real_rename = os.rename

    def rename(src, dst):
        if Path(src).name.startswith(".out.tmp-"):
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(output.os, "rename", rename)
    with pytest.raises(BundleError, match="No space left on device; .* was left as it was"):
        write_output(out, "new.txt", force=True)
    assert names(out) == [MARKER, "old.txt"] and names(tmp_path) == ["out"]


HOLD = """
import os, sys, time
from pathlib import Path
from converters.bundle.output import atomic_dir
with atomic_dir(Path(sys.argv[1]), force=True) as tmp:
    (tmp / "new.txt").write_text("new")
    print("holding", flush=True)
    if sys.argv[2] == "die":
        os.kill(os.getpid(), 9)
    time.sleep(60)
"""


def start_writer(out: Path, how: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLD), str(out), how], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"holding\n"
    return proc


def test_second_run_on_the_same_out_is_refused(tmp_path):
    out = tmp_path / "out"
    write_output(out)
    writer = start_writer(out, "hold")
    try:
        with pytest.raises(BundleError, match=rf"another edgevit run \(pid {writer.pid} on .*\) is writing"):
            check_out(out, True)
        with pytest.raises(BundleError, match="another edgevit run"):
            write_output(out, "mine.txt", force=True)
    finally:
        writer.kill()
        writer.wait()
    assert names(out) == [MARKER, "old.txt"]


def test_nested_write_of_the_same_out_is_refused(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out):
        with pytest.raises(BundleError, match="already being written by this run"):
            write_output(out)
    assert names(tmp_path) == ["out"]


def test_stale_temporary_of_a_killed_run_is_swept(tmp_path):
    out = tmp_path / "out"
    write_output(out)
    writer = start_writer(out, "die")
    assert writer.wait() == -signal.SIGKILL
    stale = [p.name for p in tmp_path.iterdir() if p.name != "out"]
    assert sorted(n.split("-")[0] for n in stale) == [".out.lock", ".out.tmp"]
    with pytest.raises(BundleError, match="already exists"):
        check_out(out, False)  # the claim alone sweeps
    assert names(tmp_path) == ["out"] and names(out) == [MARKER, "old.txt"]


def test_aside_of_a_replacement_killed_halfway_is_put_back(tmp_path):
    out = tmp_path / "out"
    write_output(out)
    os.rename(out, tmp_path / ".out.old-0a1b2c3d")  # killed after rename-aside, before rename-in
    (tmp_path / ".out.tmp-zz99aa00").mkdir()  # and its finished temporary
    (tmp_path / ".out.tmp-zz99aa00" / MARKER).write_text("{}")
    (tmp_path / ".out.tmp-mine0000").mkdir()  # a user's folder that only looks like one
    (tmp_path / ".out.tmp-mine0000" / "data.txt").write_text("data")
    with pytest.raises(BundleError, match="already exists"):
        check_out(out, False)
    assert names(tmp_path) == [".out.tmp-mine0000", "out"] and names(out) == [MARKER, "old.txt"]


def test_atomic_file_replaces_a_file_only_with_force(tmp_path):
    out = tmp_path / "student.pt"
    with atomic_file(out) as tmp:
        tmp.write_text("one")
    with pytest.raises(BundleError, match="already exists"):
        with atomic_file(out) as tmp:
            tmp.write_text("two")
    with atomic_file(out, force=True) as tmp:
        tmp.write_text("three")
    assert out.read_text() == "three" and names(tmp_path) == ["student.pt"]
    with pytest.raises(BundleError, match="is a folder"):
        with atomic_file(tmp_path, force=True):
            pass
    other = tmp_path / "other.pt"
    with pytest.raises(BundleError, match="appeared while this run worked"):
        with atomic_file(other) as tmp:
            tmp.write_text("mine")
            other.write_text("theirs")
    assert other.read_text() == "theirs" and names(tmp_path) == ["other.pt", "student.pt"]


def test_claim_is_released_when_a_run_stops_before_writing(tmp_path):
    out = tmp_path / "out"
    check_out(out, False)
    assert names(tmp_path) == [".out.lock"]
    output.release_claims()  # what the CLI does after a run failed before writing
    assert names(tmp_path) == []
