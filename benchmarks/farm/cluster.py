"""The farm across hosts on Ray (the optional `farm` extra): the driver schedules, workers bench, SQLite keeps.

Each host a device hangs off joins the cluster offering that device as a custom resource, one unit
(`ray start --address HEAD:6379 --resources '{"device:board1": 1}'`); a job asks for its device's resource, so it
runs on such a host, and one at a time per host. The bundle travels through Ray's object store (hosts need not
share a file system), with the fidelity inputs, and is unpacked on the worker into a temporary folder for the
try; the bench verifies it file by file there as it does locally.

Only the driver writes the database, as each result comes back (`ray.wait`), and retries are the driver's too
(Ray's own task retries are off), so `attempts` counts what really ran. A worker lost mid-job (node killed,
raylet gone) surfaces as a failed try and is retried on any host still offering the device; when no live node
offers it for `wait_s` seconds, the try counts as failed; out of attempts, the job is recorded failed with why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from benchmarks.bench import BenchSettings
from benchmarks.devices.base import BenchInputs
from benchmarks.farm.errors import FarmError, one_line
from benchmarks.farm.run import FarmRun, Opener, attempt, backoff, device_down, record
from benchmarks.farm.spec import DeviceEntry

POLL_S = 0.5


def pack(bundle: Path) -> dict[str, bytes]:
    """Every file of a bundle folder by its relative path (a .mlpackage is a folder: its files too)."""
    return {str(p.relative_to(bundle)): p.read_bytes() for p in sorted(Path(bundle).rglob("*")) if p.is_file()}


def remote_attempt(
    opener: Opener, entry: DeviceEntry, shipped: tuple[dict[str, bytes], BenchInputs], settings: BenchSettings
) -> dict[str, Any]:
    """`run.attempt` on the worker, on the bundle shipped in (unpacked into a temporary folder, removed after);
    says which Ray node ran it."""
    import ray

    files, inputs = shipped
    with tempfile.TemporaryDirectory(prefix="edgevit-farm-") as tmp:
        for rel, data in files.items():
            (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / rel).write_bytes(data)
        outcome = attempt(opener, entry, Path(tmp), settings, inputs)
    outcome["host"] = f"{outcome['host']} (ray node {ray.get_runtime_context().get_node_id()[:12]})"
    return outcome


def connect(address: str | bool) -> Any:
    try:
        import ray
    except ImportError:
        raise FarmError("the farm's Ray mode needs Ray: pip install 'edgevit[farm]'") from None
    where = os.environ.get("RAY_ADDRESS", "auto") if address is True else str(address)
    reachable(where)
    try:
        ray.init(address=where, logging_level=logging.WARNING, log_to_driver=False)
    except Exception as exc:  # ConnectionError, or a RuntimeError when there is no cluster to find
        raise FarmError(
            f"cannot join the Ray cluster at {where}: {one_line(exc)}; start one with `ray start --head`"
        ) from None
    return ray


def reachable(where: str) -> None:
    """A HOST:PORT nothing answers on, refused in seconds (ray.init would keep retrying for minutes)."""
    host, _, port = where.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise FarmError(
            f"cannot reach the Ray cluster at {where} ({exc.strerror or exc}); start it with `ray start --head`"
        ) from None


def run_on_ray(address: str | bool, run: FarmRun, queues: dict[str, list[int]]) -> None:
    """Every queued job on the cluster at `address`, at most one in flight per device."""
    with contextlib.redirect_stdout(sys.stderr):  # Ray prints node deaths to stdout: keep that for results
        ray = connect(address)
        try:
            drive(ray, run, queues)
        finally:
            ray.shutdown()


def drive(ray: Any, run: FarmRun, queues: dict[str, list[int]]) -> None:
    task = ray.remote(num_cpus=0, max_retries=0)(remote_attempt)
    store, farm = run.store, run.farm
    entries = {e.name: e for e in farm.devices}
    todo = {name: deque(ids) for name, ids in queues.items() if ids}
    shipped: dict[str, Any] = {}  # bundle path -> object ref of (its files, its inputs)
    flying: dict[Any, tuple[DeviceEntry, int, float]] = {}  # ref -> (device, job, since when no node offers it)
    not_before: dict[str, float] = {}
    while todo or flying:
        busy = {entry.name for entry, _, _ in flying.values()}
        for name in [n for n in todo if n not in busy and time.monotonic() >= not_before.get(n, 0)]:
            entry, job = entries[name], store.job(todo[name][0])
            if job.bundle not in shipped:
                shipped[job.bundle] = ray.put((pack(Path(job.bundle)), run.inputs[job.bundle]))
            store.start(job.id)
            run.notify(job.id, "start")
            ref = task.options(resources={entry.resource: 1}).remote(
                run.opener, entry, shipped[job.bundle], farm.settings
            )
            flying[ref] = (entry, job.id, 0.0)
        if not flying:  # every device waits out a backoff
            time.sleep(POLL_S)
            continue
        ready, _ = ray.wait(list(flying), num_returns=1, timeout=POLL_S)
        for ref in ready:
            entry, job_id, _ = flying.pop(ref)
            try:
                outcome = ray.get(ref)
            except Exception as exc:  # the worker or its node died mid-job: RayError subclasses
                outcome = {"error": f"lost on Ray: {one_line(exc)}", "down": False, "host": None}
            settle(run, entry, job_id, outcome, todo, not_before)
        offered = ray.cluster_resources()
        for ref, (entry, job_id, since) in list(flying.items()):
            if offered.get(entry.resource, 0) >= 1:
                flying[ref] = (entry, job_id, 0.0)
            elif since == 0.0:
                flying[ref] = (entry, job_id, time.monotonic())
            elif time.monotonic() - since > farm.wait_s:
                ray.cancel(ref, force=True)
                del flying[ref]
                reason = f"no live Ray node offers {entry.resource} (waited {farm.wait_s:g} s)"
                settle(run, entry, job_id, {"error": reason, "down": True, "host": None}, todo, not_before)


def settle(
    run: FarmRun,
    entry: DeviceEntry,
    job_id: int,
    outcome: dict[str, Any],
    todo: dict[str, deque[int]],
    not_before: dict[str, float],
) -> None:
    """Record a try; move the device's queue on (or retry after the backoff, or give the device up)."""
    event = record(run, entry, job_id, outcome)
    if event == "retry":
        not_before[entry.name] = time.monotonic() + backoff(entry, run.store.job(job_id).failures)
        return
    queue = todo[entry.name]
    queue.popleft()
    if event == "failed" and outcome.get("down"):
        device_down(run, entry, list(queue), outcome["error"])
        queue.clear()
    if not queue:
        del todo[entry.name]
