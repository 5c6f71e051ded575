"""The farm across hosts on a real local Ray cluster: a head node and a worker node offering devices "a" and "c"
as custom resources. The worker node is killed (SIGKILL, no draining) as soon as its first job is stored, and a
new node offering only "a" joins: a's interrupted job re-runs there, c's unfinished jobs are recorded failed (no
live node offers it), and every job finished before the kill is kept as it was."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from ray.cluster_utils import Cluster

from edgevit.bundle import write_bundle
from edgevit.models import create

FARM = """
attempts = 2
backoff_s = 0.2
wait_s = 3
[bench]
runs = 2
warmup = 1
threads = 1
[[device]]
spec = "local"
name = "a"
[[device]]
spec = "local"
name = "c"
"""


def jobs(db: Path) -> dict[tuple[str, str], dict]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    rows = {(Path(r["bundle"]).name, r["device"]): dict(r) for r in con.execute("SELECT * FROM jobs")}
    con.close()
    return rows


@pytest.fixture
def cluster():
    """The head node (no device) and a short private folder (unix socket paths must be short) for Ray's files
    and the worker nodes' temporary folders (a killed node leaves its own behind)."""
    temp = tempfile.mkdtemp(prefix="evray", dir="/tmp")
    cluster = None
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 1,
                "include_dashboard": False,
                "temp_dir": temp,
                # a dead node is noticed in ~1 s instead of Ray's default ~15 s (the farm waits for either)
                "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 2},
            },
        )
        yield cluster, {"TMPDIR": temp}
    finally:
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def test_a_worker_node_killed_mid_run_loses_nothing(cluster, tmp_path):
    cluster, env = cluster
    torch.manual_seed(0)
    bundles = [tmp_path / "bundle0", tmp_path / "bundle1"]  # the same bundle in two folders: two jobs per device
    write_bundle(create("vit_ti16_224", depth=1, img_size=32, num_classes=10), ("onnx",), None, bundles[0])
    shutil.copytree(bundles[0], bundles[1])
    worker = cluster.add_node(num_cpus=1, resources={"device:a": 1, "device:c": 1}, env_vars=env)
    (tmp_path / "farm.toml").write_text(FARM)
    db = tmp_path / "farm.sqlite"
    farm = subprocess.Popen(
        [sys.executable, "-c", "from edgevit.cli import main; main()", "farm", "run", str(tmp_path / "farm.toml"),
         *map(str, bundles), "--db", str(db), "--ray", cluster.address, "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    at_kill, replacement = None, None
    deadline = time.monotonic() + 150
    while farm.poll() is None and time.monotonic() < deadline and at_kill is None:
        time.sleep(0.2)
        try:
            rows = jobs(db) if db.exists() else {}
        except sqlite3.Error:  # the schema is being created
            continue
        if any(r["status"] == "done" for r in rows.values()):
            cluster.remove_node(worker, allow_graceful=False)  # the host dies mid-run
            at_kill = rows
            # device a's board, re-plugged into another host
            replacement = cluster.add_node(num_cpus=1, resources={"device:a": 1}, env_vars=env)
    try:
        out, err = farm.communicate(timeout=max(deadline - time.monotonic(), 1))
    finally:
        farm.kill()
    assert at_kill is not None, f"the farm ended before a job was stored: {err[-500:]}"
    lost_c = sum(k[1] == "c" and r["status"] != "done" for k, r in at_kill.items())
    assert farm.returncode == 2, err[-800:]
    assert err.splitlines()[-1].startswith(f"error: {lost_c} of 4 jobs failed (c: "), err[-800:]
    assert any(r["status"] == "running" for r in at_kill.values())  # the kill interrupted a job

    final = jobs(db)
    assert {r["status"] for r in final.values()} <= {"done", "failed"}
    assert len(json.loads(out)) == 4
    for key, row in final.items():
        old = at_kill[key]
        if old["status"] == "done":  # finished before the kill: kept, not re-run
            assert (row["status"], row["attempts"], row["results"]) == ("done", 1, old["results"])
            assert worker.node_id[:12] in row["host"]
        elif key[1] == "a":  # re-run on the node that took over device a
            assert row["status"] == "done" and replacement.node_id[:12] in row["host"]
            assert json.loads(row["results"])["farm"]["device"] == "a"
        else:  # no live node offers device c any more
            assert row["status"] == "failed" and row["results"] is None
            assert "device:c" in row["error"] or "lost on Ray" in row["error"]
