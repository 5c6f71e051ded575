"""The `edgevit.bench` results file: its schema version, the latency summary, reading it back, its tables.

Latency is summarised from the raw per-call times after warm-up: median, p90, p99, min, max, mean, standard
deviation, and the spread as (p90 - p10) / median in percent (scale-free, robust to one descheduled call).
Readers refuse a file from a newer schema version in one line rather than misread it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import Table

RESULTS_SCHEMA = "edgevit.bench"
RESULTS_VERSION = 1


class ResultsError(ValueError):
    """A results file that cannot be used (not one, unreadable, or from a newer schema): one line."""


def latency_summary(samples_s: list[float]) -> dict[str, Any]:
    """Milliseconds: median, p10, p90, p99, min, max, mean, stdev, spread % and n, plus the raw samples."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    p10, median, p90, p99 = (float(v) for v in np.percentile(ms, [10, 50, 90, 99]))
    return {
        "median_ms": median,
        "p10_ms": p10,
        "p90_ms": p90,
        "p99_ms": p99,
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "mean_ms": float(ms.mean()),
        "stdev_ms": float(ms.std()),
        "spread_pct": 100.0 * (p90 - p10) / median,
        "n": int(ms.size),
        "samples_ms": [round(float(v), 4) for v in ms],
    }


def load_results(path: Path) -> dict[str, Any]:
    """A results file written by `edgevit bench`, or ResultsError naming the problem and the fix."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ResultsError(f"cannot read results {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ResultsError(f"{path} is not JSON ({exc}); pass a file written by `edgevit bench --out`") from None
    if not isinstance(data, dict) or data.get("schema") != RESULTS_SCHEMA:
        raise ResultsError(f"{path} is not an edgevit bench results file; pass a file written by `edgevit bench --out`")
    version = data.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise ResultsError(f"{path} has no valid schema_version; pass a file written by `edgevit bench --out`")
    if version > RESULTS_VERSION:
        raise ResultsError(
            f"{path} is from a newer results schema (version {version}, this edgevit reads up to "
            f"{RESULTS_VERSION}); upgrade edgevit to read it"
        )
    return data


def fmt(value: float | None, digits: int = 3) -> str | None:
    """A figure for a table cell, or None (an empty cell) when there is none."""
    if value is None:
        return None
    return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"


def energy_cell(energy: dict[str, Any] | None) -> str:
    """J/inference with its windows, or the reason it was not measured."""
    if not energy:
        return "not measured"
    if not energy.get("measured"):
        return energy.get("reason", "not measured")
    if "joules_per_inference" not in energy:
        return f"measured with {', '.join(energy.get('meters', []))}: per artifact, in the tables"
    return (
        f"{energy['joules_per_inference'] * 1e3:.3g} mJ ({energy['meter']}; {energy['active_window_s']:.1f} s "
        f"active, idle {energy['idle_watts']:.2f} W over {energy['idle_window_s']:.1f} s subtracted)"
    )


def energy_mj(energy: dict[str, Any]) -> str:
    """A row's millijoules per inference, or "not measured"."""
    return (fmt(energy["joules_per_inference"] * 1e3) or "") if energy.get("measured") else "not measured"


def artifact_name(row: dict[str, Any]) -> str:
    return f"{row['unit']} · {row['target']} {row['precision']}"


def results_tables(results: dict[str, Any]) -> list[Table]:
    """Speed and fidelity of every row, one table each, with the notes a reader needs to trust them. The energy
    column appears only when some row was metered; otherwise a note says why nothing was."""
    rows = results["rows"]
    metered = any(r.get("energy", {}).get("measured") for r in rows if r["status"] == "ok")
    speed = Table(
        "Speed",
        ["artifact", "median ms", "p90 ms", "p99 ms", "min ms", "spread %", "inf/s", "load s", "peak MB", "+MB",
         "threads", "size MB", *(["mJ/inf"] if metered else [])],
    )  # fmt: skip
    fidelity = Table(
        "Fidelity", ["artifact", "vs reference (min dB)", "top-1 agreement", "vs eager at conversion (min dB)"]
    )
    skipped = []
    for row in rows:
        size = fmt(row["size_bytes"] / 1e6)
        if row["status"] != "ok":
            speed.rows.append([artifact_name(row), row["status"], *[None] * 9, size, *([None] if metered else [])])
            skipped.append(f"{artifact_name(row)}: {row['reason']}")
        else:
            lat, mem = row["latency"], row["memory"]
            speed.rows.append([
                artifact_name(row), fmt(lat["median_ms"]), fmt(lat["p90_ms"]), fmt(lat["p99_ms"]),
                fmt(lat["min_ms"]), fmt(lat["spread_pct"], 2), fmt(row["throughput_per_s"]),
                fmt(row["load_seconds"]), fmt(mem["peak_bytes"] / 1e6), fmt(mem["added_bytes"] / 1e6),
                row["threads"], size, *([energy_mj(row["energy"])] if metered else []),
            ])  # fmt: skip
        fid = row.get("fidelity") or {}
        eager = row["parity_vs_eager_db"]
        fidelity.rows.append([
            artifact_name(row),
            fid.get("note") if fid.get("min_sqnr_db") is None else fmt(float(fid["min_sqnr_db"])),
            fmt(fid.get("top1_agreement")),
            fmt(min(float(v) for v in eager.values())) if eager else row["parity_note"],
        ])  # fmt: skip
    over = results.get("overhead", {})
    speed.notes = [
        *skipped,
        f"{results['settings']['runs']} timed calls after {results['settings']['warmup']} warm-up, batch 1, "
        "back to back; spread = (p90 - p10) / median; load s: a second load (the first also imports the runtime)",
        "peak MB: high-water resident memory of a process that only loads and runs that artifact; "
        "+MB: above the same process after its imports",
        f"energy: {energy_cell(results.get('energy'))}",
        f"harness overhead: {over.get('summary', 'not measured')}",
    ]
    fidelity.notes = [f"inputs: {results['inputs']}"]
    return [speed, fidelity]
