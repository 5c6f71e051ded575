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
    return [speed, fidelity, *tracker_tables(results.get("tracker")), *quant_tables(results.get("quant"))]


def quant_tables(quant: dict[str, Any] | None) -> list[Table]:
    """Per quantized unit, its plan layer by layer: bits, and where the plan was searched the layer's measured
    sensitivity (output SQNR with it alone quantized at those bits) and why it got them."""
    tables = []
    for unit in (quant or {}).get("units", []):
        table = Table(
            f"Quantization plan, {unit['unit']} ({quant['method']}, bits {quant['bits']})",
            ["layer", "kind", "bits", "SQNR dB alone", "drop dB", "noise %", "why"],
        )
        for layer in unit["layers"]:
            bits = f"W{layer['weight_bits']}A{layer['act_bits']}" if layer["weight_bits"] else f"A{layer['act_bits']}"
            share = layer["noise_share"]
            table.rows.append([layer["layer"], layer["kind"], bits, fmt(_number(layer["sqnr_db"])),
                               fmt(layer["sqnr_drop_db"], 2), fmt(100 * share, 2) if share is not None else None,
                               layer["why"]])  # fmt: skip
        if unit.get("sensitivity"):
            table.notes.append(
                "SQNR dB alone: the unit's output with only this layer quantized at its bits (measured on the "
                "calibration data); drop: against its highest candidate; noise %: its share of the predicted noise"
            )
            table.notes += [_budget_note(b) for b in unit["budgets"]]
            if (predicted := _number(unit.get("predicted_sqnr_db"))) is not None:
                table.notes.append(f"predicted unit SQNR with every layer quantized: {predicted:.1f} dB")
        else:
            table.notes.append(unit.get("note", "a uniform plan: no per-layer sensitivity was measured"))
        tables.append(table)
    return tables


def _budget_note(budget: dict[str, Any]) -> str:
    unit = " bytes" if budget["unit"] == "B" else f" {budget['unit']}"
    return f"{budget['kind']} budget {fmt(budget['limit'])}{unit}, used {fmt(budget['used'])}{unit}"


def tracker_tables(tracker: dict[str, Any] | None) -> list[Table]:
    """An EfficientTAM bundle's trackers: mask IoU against the reference on the clip, and J&F on DAVIS folders."""
    if not tracker:
        return []
    clip = Table("Tracker fidelity (mask IoU vs reference)", ["tracker", "status", "mean IoU", "min IoU",
                 "logit SQNR dB", "reference mask area", "note"])  # fmt: skip
    for row in tracker.get("rows", []):
        name = f"{row['target']} {row['precision']}"
        if row["status"] != "ok":
            clip.rows.append([name, row["status"], None, None, None, None, row["reason"]])
            continue
        iou = [fmt(row.get("iou_mean"), 4), fmt(row.get("iou_min"), 4)]
        area = fmt(row.get("reference_area"))
        clip.rows.append([name, "ok", *iou, fmt(_number(row.get("logit_sqnr_db"))), area, row.get("note")])
    clip.notes = [f"clip: {tracker.get('clip')}", f"reference: {tracker.get('reference', tracker.get('note'))}"]
    clip.notes += [f"label: {tracker['label']}"] if tracker.get("label") else []
    tables = [clip]
    if davis := tracker.get("davis"):
        table = Table("Tracker J&F on DAVIS-layout ground truth", ["tracker", "J", "F", "J&F", "objects", "note"])
        for row in davis["rows"]:
            if row["status"] != "ok":
                table.rows.append([f"{row['target']} {row['precision']}", None, None, None, None, row["reason"]])
                continue
            table.rows.append([row["tracker"], fmt(row["J"], 4), fmt(row["F"], 4), fmt(row["J&F"], 4),
                               len(row["objects"]), row.get("note")])  # fmt: skip
        table.notes = [
            f"{davis['root']}: sequences {', '.join(davis['sequences'])}; each object prompted with its first-frame "
            "mask; J and F averaged over frames after the first and before the last, then over objects (DAVIS); "
            "F matches boundaries within ceil(0.008 x image diagonal) pixels",
            *([f"label: {tracker['label']}"] if tracker.get("label") else []),
        ]
        tables.append(table)
    return tables


def _number(value: Any) -> float | None:
    """A figure that strict JSON may have turned into the string "inf"."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
