"""`edgevit farm run`: every bundle × device job, devices in parallel, each result stored as it arrives.

One worker per device (a thread here, a Ray task on the host the device hangs off with `cluster.py`); a device's
jobs run one after the other, since two benches on one device would time each other. A try that fails is retried
after `backoff_s * 2**(k-1)` seconds, up to the device's `attempts`, then recorded failed with its reason; when
the last try failed because the device itself did not answer (opening it or its `check()`), the device is taken
as down and its remaining jobs are recorded failed without being tried. Nothing is lost: every state change is
committed before the next step (`store.py`), and a later run re-queues what was running or failed and never
re-runs what is done.

Devices are opened by an `Opener` (default: `benchmarks.devices.open_device` on the entry's spec) and every
device of a bundle is given the same fidelity inputs, computed once per bundle by the caller (`edgevit farm`
uses the photos `edgevit bench` uses), so the scheduler knows nothing of ssh, adb or photos.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.bench import BenchSettings
from benchmarks.devices import BenchInputs, Device, open_device
from benchmarks.farm.errors import FarmError, one_line
from benchmarks.farm.spec import DeviceEntry, FarmSpec
from benchmarks.farm.store import Job, Store
from benchmarks.report import json_safe
from converters.bundle import MANIFEST, BundleError, read_manifest, verify_artifact

Opener = Callable[[DeviceEntry], Device]
# inputs_for(bundle, manifest): the fidelity inputs every device benches that bundle on
InputsFor = Callable[[Path, dict[str, Any]], BenchInputs]
# on_event(job, event): "start", "done", "retry", "failed" — for a progress display
OnEvent = Callable[[Job, str], None]


def open_entry(entry: DeviceEntry) -> Device:
    """The device a farm entry names, with its kind-specific options (`benchmarks.devices.open_device`)."""
    return open_device(entry.spec, **entry.options)


@dataclass
class FarmRun:
    """What every worker of one `farm run` shares: the farm, the database, how devices open, each bundle's
    inputs (by the bundle's absolute path) and the progress callback."""

    farm: FarmSpec
    store: Store
    opener: Opener
    inputs: dict[str, BenchInputs]
    on_event: OnEvent | None = None

    def notify(self, job_id: int, event: str) -> None:
        if self.on_event is not None:
            self.on_event(self.store.job(job_id), event)


def attempt(
    opener: Opener, entry: DeviceEntry, bundle: Path, settings: BenchSettings, inputs: BenchInputs
) -> dict[str, Any]:
    """One try of one job, as plain data (it crosses Ray's wire): {"results"}, or {"error"} with "down" true
    when the device itself failed to open or answer its check."""
    host = socket.gethostname()
    try:
        device = opener(entry)
        device.check()
    except Exception as exc:  # any failure to reach the device: retried, then the device is taken as down
        return {"error": one_line(exc), "down": True, "host": host}
    try:
        return {"results": json_safe(device.bench(bundle, settings, inputs=inputs)), "host": host}
    except Exception as exc:  # the job failed on a device that answered: retried, recorded with its reason
        return {"error": one_line(exc), "down": False, "host": host}


def run_farm(
    farm: FarmSpec,
    bundles: list[Path],
    store: Store,
    inputs_for: InputsFor,
    opener: Opener = open_entry,
    ray_address: str | bool = False,
    on_event: OnEvent | None = None,
) -> list[int]:
    """Run every unfinished job of `bundles` × the farm's devices; the ids of all of them (done before or now)."""
    if len({Path(b).resolve() for b in bundles}) != len(bundles):
        raise FarmError("a bundle is named twice; name each once")
    manifests = {str(Path(b).resolve()): checked_manifest(Path(b), farm.settings) for b in bundles}
    store.check_settings(settings_key(farm.settings))
    every, queues = [], {}
    for entry in farm.devices:
        keys = [(path, digest, entry.name, entry.spec) for path, (_, digest) in manifests.items()]
        ids = store.add_jobs(keys)
        store.requeue(ids)
        queues[entry.name] = [j.id for j in store.jobs(ids) if j.status == "queued"]
        every += ids
    waiting = {store.job(i).bundle for ids in queues.values() for i in ids}
    inputs = {path: inputs_for(Path(path), manifest) for path, (manifest, _) in manifests.items() if path in waiting}
    run = FarmRun(farm, store, opener, inputs, on_event)
    address = ray_address or farm.ray
    if address:
        from benchmarks.farm.cluster import run_on_ray

        run_on_ray(address, run, queues)
        return every
    # daemon threads: Ctrl-C ends the run at once, leaving the running jobs "running" for the next run to re-queue
    workers = [
        threading.Thread(target=device_worker, args=(run, e, queues[e.name]), name=f"farm-{e.name}", daemon=True)
        for e in farm.devices
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return every


def checked_manifest(bundle: Path, settings: BenchSettings) -> tuple[dict[str, Any], str]:
    """The bundle's manifest (valid, its chosen artifacts' sha256 right, before any job) and the manifest's
    sha256 (a bundle rebuilt at the same path is new jobs)."""
    manifest = read_manifest(bundle)
    wanted = settings.targets
    chosen = [(i, a) for i, a in enumerate(manifest["artifacts"]) if not wanted or a["target"] in wanted]
    if not chosen:
        have = ", ".join(sorted({a["target"] for a in manifest["artifacts"]}))
        raise BundleError(f"{bundle} has no {', '.join(settings.targets or ())} artifact; it holds: {have}")
    for i, art in chosen:
        verify_artifact(bundle, art, i)
    return manifest, hashlib.sha256((bundle / MANIFEST).read_bytes()).hexdigest()


def settings_key(settings: BenchSettings) -> dict[str, Any]:
    return {"runs": settings.runs, "warmup": settings.warmup, "threads": settings.threads,
            "targets": list(settings.targets) if settings.targets else None}  # fmt: skip


def device_worker(run: FarmRun, entry: DeviceEntry, ids: list[int]) -> None:
    """One device's jobs, one after the other, each tried until done or out of attempts."""
    for n, job_id in enumerate(ids):
        while True:
            run.store.start(job_id, socket.gethostname())
            run.notify(job_id, "start")
            bundle = run.store.job(job_id).bundle
            outcome = attempt(run.opener, entry, Path(bundle), run.farm.settings, run.inputs[bundle])
            if (event := record(run, entry, job_id, outcome)) != "retry":
                break
            time.sleep(backoff(entry, run.store.job(job_id).failures))
        if event == "failed" and outcome.get("down"):
            device_down(run, entry, ids[n + 1 :], outcome["error"])
            return


def record(run: FarmRun, entry: DeviceEntry, job_id: int, outcome: dict[str, Any]) -> str:
    """Store one try's outcome; "done", "retry" or "failed"."""
    if "results" in outcome:
        results = outcome["results"]
        results["farm"] = {"device": entry.name, "spec": entry.spec, "host": outcome["host"], "job": job_id}
        results["bundle"]["path"] = run.store.job(job_id).bundle  # not the copy a Ray worker benched
        run.store.done(job_id, results, outcome["host"])
        event = "done"
    else:
        final = run.store.job(job_id).failures + 1 >= entry.attempts
        run.store.failure(job_id, outcome["error"], final)
        event = "failed" if final else "retry"
    run.notify(job_id, event)
    return event


def device_down(run: FarmRun, entry: DeviceEntry, ids: list[int], reason: str) -> None:
    for job_id in ids:
        run.store.give_up(job_id, f"not tried: device {entry.name} failed {entry.attempts} tries ({reason})")
        run.notify(job_id, "failed")


def backoff(entry: DeviceEntry, failures: int) -> float:
    return entry.backoff_s * 2 ** max(failures - 1, 0)
