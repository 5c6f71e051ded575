"""`edgevit farm` on real tiny bundles and real devices: every bundle × device job stored, a run killed with
SIGKILL resumed without re-running or losing a job, an unreachable ssh device retried then recorded failed (and
retried again by the next run), and the farm file / database errors as one line."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks.farm.store import Store
from edgevit.bundle import write_bundle
from edgevit.models import create
from tests.test_cli import run

FARM = """
attempts = 2
backoff_s = 0.1
[bench]
runs = 2
warmup = 1
threads = 1
"""


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> list[Path]:
    """Two tiny ONNX bundles (ViT-Ti cut to one block at 32 px, 10 and 5 classes)."""
    root = tmp_path_factory.mktemp("farm")
    out = []
    for n, classes in enumerate((10, 5)):
        torch.manual_seed(n)
        path = root / f"bundle{n}"
        write_bundle(create("vit_ti16_224", depth=1, img_size=32, num_classes=classes), ("onnx",), None, path)
        out.append(path)
    return out


def farm_file(tmp_path: Path, *devices: str) -> Path:
    path = tmp_path / "farm.toml"
    path.write_text(FARM + "".join(f"[[device]]\n{d}\n" for d in devices))
    return path


def jobs(db: Path) -> dict[tuple[str, str], dict]:
    """(bundle folder, device) -> the job's row, read straight from SQLite."""
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    rows = {(Path(r["bundle"]).name, r["device"]): dict(r) for r in con.execute("SELECT * FROM jobs")}
    con.close()
    return rows


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_job_runs_and_exports_for_report(bundles, tmp_path, monkeypatch, capsys):
    farm = farm_file(tmp_path, 'spec = "local"\nname = "a"', 'spec = "local"\nname = "b"')
    db = tmp_path / "farm.sqlite"
    code, out, err = run(monkeypatch, capsys, "farm", "run", str(farm), *map(str, bundles), "--db", str(db), "--json")
    assert code == 0, err
    printed = json.loads(out)
    assert len(printed) == 4 and all(j["status"] == "done" and j["attempts"] == 1 for j in printed)
    rows = jobs(db)
    assert set(rows) == {(b.name, d) for b in bundles for d in ("a", "b")}
    for (bundle, device), row in rows.items():
        results = json.loads(row["results"])
        assert results["schema"] == "edgevit.bench" and results["bundle"]["path"].endswith(bundle)
        assert results["farm"]["device"] == device and results["rows"][0]["status"] == "ok"
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    code, out, _ = run(monkeypatch, capsys, "farm", "export", str(db), "--out", str(tmp_path / "results"))
    assert code == 0 and "wrote 4 results files" in out
    files = sorted((tmp_path / "results").glob("*.json"))
    assert len(files) == 4
    page = tmp_path / "report.html"
    code, out, err = run(monkeypatch, capsys, "report", *map(str, files), "--out", str(page))
    assert code == 0 and "4 latency rows" in out, err
    code, out, _ = run(monkeypatch, capsys, "farm", "status", str(db))
    assert code == 0 and "4 done" in out


def test_a_killed_run_resumes_without_rerunning_or_losing_a_job(bundles, tmp_path, monkeypatch, capsys):
    farm = farm_file(tmp_path, 'spec = "local"\nname = "a"', 'spec = "local"\nname = "b"')
    db = tmp_path / "farm.sqlite"
    args = ["farm", "run", str(farm), *map(str, bundles), "--db", str(db)]
    child = subprocess.Popen(
        [sys.executable, "-c", "from edgevit.cli import main; main()", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    before = {}
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            before = jobs(db) if db.exists() else {}
        except sqlite3.Error:  # the schema is being created
            continue
        statuses = [r["status"] for r in before.values()]
        if "done" in statuses and len(statuses) == 4 and statuses.count("done") < 4:
            os.killpg(child.pid, signal.SIGKILL)  # the farm and its bench children, mid-run
            break
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the farm finished before it could be killed"
    after_kill = jobs(db)
    done = {k for k, r in after_kill.items() if r["status"] == "done"}
    assert done and len(done) < 4 and any(r["status"] == "running" for r in after_kill.values())

    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    resumed = jobs(db)
    assert all(r["status"] == "done" for r in resumed.values())
    for key, row in resumed.items():
        old = after_kill[key]
        if key in done:  # finished before the kill: kept as it was, not re-run
            assert row["attempts"] == 1 and row["results"] == old["results"] and row["updated"] == old["updated"]
        else:  # interrupted or never started: run once more
            assert row["attempts"] == old["attempts"] + 1


def test_an_unreachable_device_is_retried_then_recorded_failed(bundles, tmp_path, monkeypatch, capsys):
    port = closed_port()
    farm = farm_file(tmp_path, f'spec = "ssh:127.0.0.1:{port}"\nname = "gone"\nattempts = 3')
    db = tmp_path / "farm.sqlite"
    args = ["farm", "run", str(farm), *map(str, bundles), "--db", str(db)]
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2 and len(err.splitlines()) == 1 and "2 of 2 jobs failed" in err and "unreachable" in err, err
    first, second = (jobs(db)[(b.name, "gone")] for b in bundles)
    assert first["status"] == "failed" and first["attempts"] == 3 and first["failures"] == 3
    assert "unreachable" in first["error"] and first["results"] is None
    # the device is then taken as down: its next job is recorded failed without being tried
    assert second["status"] == "failed" and second["attempts"] == 0 and second["error"].startswith("not tried")

    code, out, _ = run(monkeypatch, capsys, "farm", "status", str(db), "--json")
    assert code == 0 and [j["status"] for j in json.loads(out)] == ["failed", "failed"]
    code, _, err = run(monkeypatch, capsys, *args)  # a recorded failure is resumable: tried again
    assert code == 2 and jobs(db)[(bundles[0].name, "gone")]["attempts"] == 6


def test_an_unknown_device_kind_is_one_line(bundles, tmp_path, monkeypatch, capsys):
    farm = farm_file(tmp_path, 'spec = "usb:cam0"')
    db = tmp_path / "farm.sqlite"
    code, _, err = run(monkeypatch, capsys, "farm", "run", str(farm), str(bundles[0]), "--db", str(db))
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "unknown device kind 'usb'" in err and "valid kinds: local, ssh, adb, mac" in err
    assert not db.exists()


def test_a_database_from_a_newer_schema_is_one_line(bundles, tmp_path, monkeypatch, capsys):
    db = tmp_path / "farm.sqlite"
    Store(db, create=True).close()
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 2")
    con.close()
    farm = farm_file(tmp_path, 'spec = "local"')
    for args in (["status", str(db)], ["export", str(db)], ["run", str(farm), str(bundles[0]), "--db", str(db)]):
        code, _, err = run(monkeypatch, capsys, "farm", *args)
        assert code == 2 and len(err.splitlines()) == 1, err
        assert "newer farm schema (version 2, this edgevit reads up to 1)" in err


def test_a_file_that_is_not_a_farm_database_is_one_line(tmp_path, monkeypatch, capsys):
    for content in (b"not sqlite at all, just text" * 10, None):
        db = tmp_path / "other.sqlite"
        db.unlink(missing_ok=True)
        if content:
            db.write_bytes(content)
        else:
            sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()
        code, _, err = run(monkeypatch, capsys, "farm", "status", str(db))
        assert code == 2 and len(err.splitlines()) == 1 and "is not a farm database" in err, err


def test_an_unreachable_ray_cluster_is_one_line(bundles, tmp_path, monkeypatch, capsys):
    farm = farm_file(tmp_path, 'spec = "local"')
    ray = f"127.0.0.1:{closed_port()}"
    code, _, err = run(monkeypatch, capsys, "farm", "run", str(farm), str(bundles[0]), "--db", str(tmp_path / "f.db"),
                       "--ray", ray)  # fmt: skip
    assert code == 2 and len(err.splitlines()) == 1 and f"cannot reach the Ray cluster at {ray}" in err, err
