"""`edgevit farm export`: each done job's results as a file `edgevit report` reads, and the jobs at a glance."""

from __future__ import annotations

import json
import re
from pathlib import Path

from benchmarks.farm.store import Job
from benchmarks.report import Table


def result_name(job: Job) -> str:
    """`<job>-<bundle folder>@<device>.json`, in characters every file system takes (the job id keeps two
    bundles of the same folder name apart)."""
    text = f"{job.id:03d}-{Path(job.bundle).name}@{job.device}"
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", text) + ".json"


def export_results(jobs: list[Job], out: Path) -> list[Path]:
    """Write every done job's results JSON into the folder `out`; the files written."""
    written = []
    for job in jobs:
        if job.status == "done" and job.results is not None:
            path = Path(out) / result_name(job)
            path.write_text(json.dumps(job.results, indent=1, allow_nan=False) + "\n", encoding="utf-8")
            written.append(path)
    return written


def status_table(jobs: list[Job], db: Path) -> Table:
    """One row per job: where it stands, how often it was tried, where it ran, why it failed."""
    table = Table(f"Farm {db}", ["job", "bundle", "device", "status", "attempts", "failures", "median ms", "host"])
    for job in jobs:
        table.rows.append([
            job.id, Path(job.bundle).name, job.device, job.status, job.attempts, job.failures, fastest(job), job.host,
        ])  # fmt: skip
    counts = {s: sum(j.status == s for j in jobs) for s in ("done", "failed", "running", "queued")}
    table.notes = [
        *(f"job {j.id} ({Path(j.bundle).name} @ {j.device}): {j.error}" for j in jobs if j.status != "done"),
        ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no jobs",
        "median ms: the fastest artifact's median latency; every figure is in `edgevit farm export`",
    ]
    return table


def fastest(job: Job) -> str | None:
    medians = [r["latency"]["median_ms"] for r in (job.results or {}).get("rows", []) if r.get("status") == "ok"]
    return f"{min(medians):.3g}" if medians else None
