"""The CLI never destroys a user's files: refused `--out` folders, hostile or broken checkpoints, a second run,
Ctrl-C and kill -9 — each checked by exit code, the whole of stderr (one line) and what is on disk after."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from converters.bundle import MARKER, atomic_dir, read_manifest
from edgevit.data.video import sample_video
from edgevit.models import create
from tests.test_cli import run

TINY_VIT = ["--model", "vit", "--variant", "ti16_224", "--set", "depth=1", "--set", "img_size=32"]
TINY_VIT += ["--set", "num_classes=10", "--target", "onnx"]
TRACK = ["track", "sample:bikes", "--point", "320,140", "--variant", "ti_512"]


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(err: str, *words: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and all(w in lines[0] for w in words), err
    return lines[0]


def marked_folder(path: Path) -> Path:
    """An existing edgevit output holding `old.txt`."""
    with atomic_dir(path) as tmp:
        (tmp / "old.txt").write_text("old")
    return path


@pytest.fixture
def in_work(tmp_path, monkeypatch) -> Path:
    """A working folder and a home folder, each holding a file of the user's."""
    work, home = tmp_path / "work", tmp_path / "home"
    for folder in (work, home):
        folder.mkdir()
        (folder / "mine.txt").write_text("mine")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    return tmp_path


@pytest.mark.parametrize(
    ("out", "reason"),
    [(".", "it is the working folder"), ("..", "it holds the working folder"), ("{home}", "your home folder")],
)
def test_track_refuses_working_and_home_folders_even_with_force(monkeypatch, capsys, in_work, out, reason):
    before = {p: files(p) for p in (in_work / "work", in_work / "home")}
    out = out.replace("{home}", str(Path.home()))  # what the shell makes of `--out ~`
    code, stdout, err = run(monkeypatch, capsys, *TRACK, "--out", out, "--force")
    assert code == 2 and stdout == ""
    one_error_line(err, f"refusing --out {out}", reason)
    assert {p: files(p) for p in (in_work / "work", in_work / "home")} == before
    assert names(in_work) == ["home", "work"]


def test_track_refuses_the_folder_holding_its_video(monkeypatch, capsys, tmp_path):
    videos = marked_folder(tmp_path / "videos")  # even an edgevit output: it holds this run's input now
    shutil.copy(sample_video("bikes"), videos / "clip.mp4")
    before = files(videos)
    code, _, err = run(monkeypatch, capsys, "track", str(videos / "clip.mp4"), "--point", "1,1", "--out", str(videos))
    assert code == 2
    one_error_line(err, "it holds this run's input", "clip.mp4")
    assert files(videos) == before and names(tmp_path) == ["videos"]


def test_track_refuses_a_folder_edgevit_did_not_write(monkeypatch, capsys, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"meow")
    code, _, err = run(monkeypatch, capsys, *TRACK, "--out", str(photos), "--force")
    assert code == 2
    one_error_line(err, "edgevit did not write")
    assert files(photos) == {"cat.jpg": b"meow"} and names(tmp_path) == ["photos"]


def test_track_replaces_an_edgevit_output_with_force(monkeypatch, capsys, tmp_path):
    masks = marked_folder(tmp_path / "masks")
    code, _, err = run(monkeypatch, capsys, *TRACK, "--max-frames", "1", "--out", str(masks))
    assert code == 2
    one_error_line(err, "already exists; pass --force")
    assert names(masks) == [MARKER, "old.txt"]
    code, _, err = run(monkeypatch, capsys, *TRACK, "--max-frames", "1", "--out", str(masks), "--force")
    assert code == 0, err
    assert "old.txt" not in names(masks) and {MARKER, "00000.png"} <= set(names(masks))
    assert names(tmp_path) == ["masks"]  # no aside, temporary or lock left


class Payload:
    """Unpickling this runs a shell command: a checkpoint must never be unpickled with code execution."""

    def __init__(self, flag: Path):
        self.flag = flag

    def __reduce__(self):
        return (os.system, (f"touch {self.flag}",))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("checkpoints")
    found = {
        "malicious": folder / "evil.pt",
        "corrupt": folder / "corrupt.pt",
        "mismatched": folder / "hybrid.pt",
        "matching": folder / "tiny_vit.pt",
    }
    torch.save({"model": {"w": Payload(folder / "PWNED")}}, found["malicious"])
    found["corrupt"].write_bytes(random.Random(0).randbytes(4096))
    torch.save({"model": create("mobilevit_xxs").state_dict()}, found["mismatched"])
    tiny = create("vit_ti16_224", depth=1, img_size=32, num_classes=10)
    torch.save({"model": tiny.state_dict()}, found["matching"])
    return found


@pytest.mark.parametrize("kind", ["malicious", "corrupt", "mismatched"])
@pytest.mark.parametrize("command", ["convert", "track"])
def test_bad_checkpoint_is_one_line_and_leaves_nothing(monkeypatch, capsys, tmp_path, checkpoints, command, kind):
    out = tmp_path / "out"
    args = [*(TINY_VIT if command == "convert" else TRACK[1:]), "--checkpoint", str(checkpoints[kind])]
    code, stdout, err = run(monkeypatch, capsys, command, *args, "--out", str(out))
    assert code == 2 and stdout == ""
    expected = "does not match" if kind == "mismatched" else "is not a readable torch file"
    one_error_line(err, expected)
    assert not (checkpoints["malicious"].parent / "PWNED").exists()  # the payload never ran
    assert names(tmp_path) == []  # no output, no temporary, no lock


def test_second_run_on_the_same_out_is_refused(monkeypatch, capsys, tmp_path):
    bundle = marked_folder(tmp_path / "B")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from converters.bundle import check_out; "
         "check_out(sys.argv[1], True); print('holding', flush=True); time.sleep(60)", str(bundle)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == b"holding\n"
        code, _, err = run(monkeypatch, capsys, "convert", *TINY_VIT, "--out", str(bundle), "--force")
    finally:
        holder.kill()
        holder.wait()
    assert code == 2
    one_error_line(err, f"another edgevit run (pid {holder.pid} on", "is writing")
    assert names(bundle) == [MARKER, "old.txt"]


def _ctrl_c_as_a_shell_gives_it() -> None:
    """A child inherits whether SIGINT is ignored or blocked; in the full suite (not alone, not under CPU load)
    the convert child twice ran to exit 0 past a SIGINT, so some earlier test or library leaves this process's
    SIGINT ignored or blocked (not found yet: onnx/tflite/executorch/coreml conversions and grpc leave it alone).
    A user's shell starts edgevit with the default disposition, unblocked: so does this."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_convert(tmp_path: Path, logs: Path, *args: str) -> subprocess.Popen:
    """`edgevit convert` in its own process, returned once its temporary bundle folder exists (mid-run)."""
    argv = [sys.executable, "-m", "edgevit.cli", "convert", *TINY_VIT, *args]
    env = {**os.environ, "TMPDIR": str(logs)}  # where the backend log goes
    writer = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, preexec_fn=_ctrl_c_as_a_shell_gives_it
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".B.tmp-*")):
        assert writer.poll() is None and time.monotonic() < deadline, "the run ended before it could be stopped"
        time.sleep(0.005)
    return writer


def test_kill_9_during_convert_leaves_the_previous_bundle_whole(monkeypatch, capsys, tmp_path, tmp_path_factory):
    bundle = tmp_path / "B"
    code, _, err = run(monkeypatch, capsys, "convert", *TINY_VIT, "--out", str(bundle))
    assert code == 0, err
    before = files(bundle)
    writer = start_convert(tmp_path, tmp_path_factory.mktemp("logs"), "--out", str(bundle), "--force")
    writer.kill()
    writer.communicate()
    assert files(bundle) == before
    read_manifest(bundle)
    assert sorted(p.name.split("-")[0] for p in tmp_path.iterdir()) == [".B.lock", ".B.tmp", "B"]
    code, _, err = run(monkeypatch, capsys, "convert", *TINY_VIT, "--out", str(bundle))
    assert code == 2
    one_error_line(err, "already exists; pass --force")
    assert names(tmp_path) == ["B"] and files(bundle) == before  # the dead run's temporary and lock were swept


def test_real_ctrl_c_during_convert_exits_130_and_leaves_nothing(tmp_path, tmp_path_factory, checkpoints):
    logs = tmp_path_factory.mktemp("logs")
    writer = start_convert(tmp_path, logs, "--checkpoint", str(checkpoints["matching"]), "--out", str(tmp_path / "B"))
    writer.send_signal(signal.SIGINT)
    stdout, err = writer.communicate(timeout=120)
    assert writer.returncode == 130 and stdout == b""
    one_error_line(err.decode(), "interrupted (Ctrl-C)")
    assert names(tmp_path) == [] and names(logs) == []  # no bundle, temporary, lock or backend log


def test_ctrl_c_exits_130_with_one_line_and_writes_nothing(monkeypatch, capsys, tmp_path, checkpoints):
    import converters

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(converters, "convert", interrupted)
    out = tmp_path / "B"
    code, stdout, err = run(
        monkeypatch, capsys, "convert", *TINY_VIT, "--checkpoint", str(checkpoints["matching"]), "--out", str(out)
    )
    assert code == 130 and stdout == ""
    one_error_line(err, "interrupted")
    assert names(tmp_path) == []


def test_distill_out_must_be_a_new_file(monkeypatch, capsys, tmp_path):
    code, _, err = run(monkeypatch, capsys, "distill", "hybrid_digits", "--out", str(tmp_path), "--force")
    assert code == 2
    one_error_line(err, "is a folder")
    existing = tmp_path / "student.pt"
    existing.write_bytes(b"mine")
    code, _, err = run(monkeypatch, capsys, "distill", "hybrid_digits", "--out", str(existing))
    assert code == 2
    one_error_line(err, "already exists; pass --force")
    assert names(tmp_path) == ["student.pt"] and existing.read_bytes() == b"mine"
