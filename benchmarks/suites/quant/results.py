"""One results file filled by several runs: merging a run's rows in, and what each run did."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import load_average


def merge(previous: dict[str, Any], models: dict[str, Any]) -> dict[str, Any]:
    """Earlier results with this run's measurements in place of theirs, so a long run can be split or redone.

    Per model and section, the rows of every method this run measured (who + method) replace that method's
    earlier rows, and other methods' rows are kept; `deploy` is replaced whole, because its timings were taken
    side by side and only one run's artifacts belong in one comparison.
    """
    merged = {
        name: {"subject": m["subject"], "sections": {k: dict(v) for k, v in m["sections"].items()}}
        for name, m in previous.items()
    }
    for name, fresh in models.items():
        entry = merged.setdefault(name, {"subject": fresh["subject"], "sections": {}})
        entry["subject"] = fresh["subject"]
        for section, new in fresh["sections"].items():
            old = entry["sections"].get(section)
            if old is None or section == "deploy":
                entry["sections"][section] = new
                continue
            measured = {(r.get("origin"), r.get("method")) for r in new["rows"]}
            kept = [r for r in old["rows"] if (r.get("origin"), r.get("method")) not in measured]
            entry["sections"][section] = {"rows": kept + new["rows"], "seconds": new["seconds"]}
    return merged


def load_previous(json_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(models, runs) of an earlier results file, or empty ones when there is none."""
    if not json_path.is_file():
        return {}, []
    data = json.loads(json_path.read_text()).get("data", {})
    return data.get("models", {}), data.get("runs", [])


def run_record(args: argparse.Namespace, started: float, machine: dict[str, Any]) -> dict[str, Any]:
    """What one invocation did, kept beside the figures (several runs may have filled one file)."""
    keep = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    return {
        "args": keep,
        "taken_at": machine["taken_at"],
        "wall_s": round(time.perf_counter() - started, 1),
        "load_average_start": machine["load_average"],
        "load_average_end": load_average(),
        "threading_env": machine["threading_env"],
    }


def run_notes(runs: list[dict[str, Any]], machine: dict[str, Any]) -> list[str]:
    """How the figures were taken: runs merged, threads, load on the shared machine."""
    last = runs[-1]
    lines = [
        f"{len(runs)} run(s) merged into this file, {sum(r['wall_s'] for r in runs) / 60:.0f} min of wall time in "
        f"all; the last took {last['wall_s']:.0f} s (models {', '.join(last['args']['models'])}; sections "
        f"{', '.join(last['args']['sections'])}).",
        f"Timing: {last['args']['runs']} interleaved rounds after {last['args']['warmup']} warm-up rounds, "
        f"{'/'.join(map(str, last['args']['threads']))} thread(s) for torch and every runtime; calibration and "
        "conversion on "
        f"{last['args']['work_threads']} thread(s).",
        "The machine is shared with other agents' jobs: 1-minute load average "
        + "; ".join(f"{r['load_average_start'][0]} → {r['load_average_end'][0]}" for r in runs)
        + f" on {machine['cores_available']} cores. Ratios of interleaved medians hold better than absolute ms.",
        f"OMP_WAIT_POLICY={last['threading_env'].get('OMP_WAIT_POLICY') or 'unset'} in the last run.",
    ]
    return lines
