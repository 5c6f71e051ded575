"""The lowering suite's tables and the issue's goals, computed from the measured data alone."""

from __future__ import annotations

import argparse
import os
from typing import Any

from benchmarks.report import Table, gflops_per_second, percent_of_peak
from benchmarks.suites.lowering.measure import UNITS

# The goals, judged in the summary.
CONVERSION_BUDGET_S = 120.0


def latency_table(results: list[dict[str, Any]], peaks: dict[int, float], args: argparse.Namespace) -> Table:
    table = Table(
        title=f"Latency per unit (median of {args.runs} interleaved runs after {args.warmup} warm-up rounds)",
        columns=[
            "model",
            "unit",
            "threads",
            "target",
            "convert s",
            "median ms",
            "p10–p90 ms",
            "× eager",
            "GFLOP",
            "GFLOP/s",
            "% peak",
            "min SQNR dB",
            "load 1 min",
            "note",
        ],
    )
    for res in results:
        for unit in res["units"]:
            flops = res["flops"][unit]
            for threads, timing in res["timings"][unit].items():
                eager = timing["stats"]["eager"]
                load = max(timing["load_average_before"][0], timing["load_average_after"][0])
                common = (res["model"], unit, threads, flops, peaks[threads], load, eager)
                table.rows.append(_latency_row(*common, "eager (PyTorch)", None, eager, None, ""))
                for target, rec in res["conversions"][unit].items():
                    stats = timing["stats"].get(target)
                    if rec["status"] != "ok":
                        note = f"conversion failed: {rec['error']}"
                    elif stats is None:
                        note = f"converts; cannot run here ({timing['not_run'].get(target, 'no runtime')})"
                    else:
                        note = _facts_note(target, rec["facts"])
                    label = _runtime_label(target)
                    table.rows.append(
                        _latency_row(*common, label, rec.get("conversion_s"), stats, rec.get("min_sqnr_db"), note)
                    )
    table.notes = [
        "convert s: lowering + writing + loading the file back (the artifact's conversion_seconds), after a "
        "warm-up conversion of a one-layer unit; parity is not included.",
        "× eager: median over the eager median measured in the same interleaved rounds; below 1 is faster.",
        "GFLOP: matmul/conv/attention FLOPs counted by torch's FlopCounterMode on eager (elementwise ops not "
        "counted); % peak: that rate over the fp32 GEMM roof measured in this run at the same thread count ("
        + ", ".join(f"{t} thread(s): {p:.0f} GFLOP/s" for t, p in peaks.items())
        + ").",
        "min SQNR: the lowest over the unit's outputs, artifact vs eager on the unit's example inputs (inf: "
        "bit-equal). Random weights: latency does not depend on them, parity figures only loosely.",
        "load 1 min: the higher 1-minute load average read before and after the unit's rounds; above the "
        "core count the cores were shared with other jobs while timing.",
        "Runner times include copying numpy inputs in and outputs out, as an app pays; eager gets tensors.",
    ]
    return table


def _runtime_label(target: str) -> str:
    return {
        "onnx": "onnx (onnxruntime CPU)",
        "executorch": "executorch (XNNPACK)",
        "tflite": "tflite (LiteRT XNNPACK)",
        "coreml": "coreml",
    }.get(target, target)


def _latency_row(
    model: str,
    unit: str,
    threads: int,
    flops: int,
    peak: float,
    load: float,
    eager: dict[str, Any],
    label: str,
    convert_s: float | None,
    stats: dict[str, Any] | None,
    sqnr: float | None,
    note: str,
) -> list[Any]:
    median_s = None if stats is None else stats["median_ms"] / 1e3
    rate = gflops_per_second(flops, median_s)
    pct = percent_of_peak(flops, median_s, peak)
    return [
        model,
        unit,
        threads,
        label,
        None if convert_s is None else round(convert_s, 1),
        None if stats is None else round(stats["median_ms"], 1),
        None if stats is None else f"{stats['p10_ms']:.1f}–{stats['p90_ms']:.1f}",
        None if stats is None else round(stats["median_ms"] / eager["median_ms"], 2),
        round(flops / 1e9, 2),
        None if rate is None else round(rate, 1),
        None if pct is None else round(pct, 1),
        None if sqnr is None else round(sqnr, 1),
        load,
        note,
    ]


def _facts_note(target: str, facts: dict[str, Any]) -> str:
    if target != "executorch":
        return ""
    ops = sorted(facts.get("undelegated_ops", {}).items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{op}×{n}" for op, n in ops[:4])
    more = f", +{len(ops) - 4} kinds" if len(ops) > 4 else ""
    return (
        f"{facts.get('delegated_subgraphs')} XNNPACK subgraphs; {facts.get('undelegated_nodes', 0)} nodes "
        f"undelegated{': ' + shown + more if ops else ''}"
    )


def conversion_table(results: list[dict[str, Any]]) -> Table:
    table = Table(
        title=f"Conversion per target (goal: one target under {CONVERSION_BUDGET_S:.0f} s)",
        columns=[
            "model",
            "target",
            "units ok",
            "warm-up s",
            "convert s (sum)",
            "with parity s",
            "slowest unit",
            f"fresh process s (goal < {CONVERSION_BUDGET_S:.0f})",
            "goal",
        ],
        notes=[
            "warm-up s: a one-layer unit converted first (backend imports, first-call set-up); only the first "
            "model's is cold, later models find the backend imported.",
            "fresh process s: the first (cold) warm-up + every unit's conversion with its parity check — what "
            "one `convert` run for this target costs, less building the model.",
        ],
    )
    for res in results:
        for target, total in _per_target(res, results[0]["backend_warmup_s"]).items():
            table.rows.append(
                [
                    res["model"],
                    target,
                    f"{total['ok']}/{total['units']}",
                    _round(total["warmup_s"]),
                    round(total["convert_s"], 1),
                    round(total["wall_s"], 1),
                    f"{total['slowest']} {total['slowest_s']:.1f} s",
                    round(total["fresh_s"], 1),
                    total["goal"],
                ]
            )
    return table


def _round(x: float | str) -> float | str:
    return round(x, 1) if isinstance(x, float) else x


def _per_target(res: dict[str, Any], cold_warmups: dict[str, float | str]) -> dict[str, dict[str, Any]]:
    """Per target: units converted, times summed, and the conversion goal judged on a fresh process's cost
    (`cold_warmups`: the warm-ups of the run's first model, when the backends were not imported yet)."""
    out = {}
    for target, warm in res["backend_warmup_s"].items():
        cold = cold_warmups.get(target, warm)
        recs = {u: res["conversions"][u][target] for u in res["units"]}
        ok = [r for r in recs.values() if r["status"] == "ok"]
        slowest = max(recs, key=lambda u: recs[u]["wall_s"])
        wall = sum(r["wall_s"] for r in recs.values())
        fresh = wall + (cold if isinstance(cold, float) else 0.0)
        partial = "" if len(recs) == len(UNITS) else f" ({len(recs)} of {len(UNITS)} units)"
        if not isinstance(warm, float):
            goal = "missed: even a one-layer unit does not convert"
        elif len(ok) < len(recs):
            goal = f"missed: {len(recs) - len(ok)} of {len(recs)} units do not convert"
        elif fresh < CONVERSION_BUDGET_S:
            goal = f"met by {CONVERSION_BUDGET_S - fresh:.0f} s{partial}"
        else:
            goal = f"missed by {fresh - CONVERSION_BUDGET_S:.0f} s{partial}"
        out[target] = {
            "units": len(recs),
            "ok": len(ok),
            "warmup_s": warm,
            "convert_s": sum(r.get("conversion_s", 0.0) for r in ok),
            "wall_s": wall,
            "fresh_s": fresh,
            "slowest": slowest,
            "slowest_s": recs[slowest]["wall_s"],
            "goal": goal,
        }
    return out


def goals(results: list[dict[str, Any]]) -> list[str]:
    """The issue's two goals, judged per model (and per thread count for latency) with the margin."""
    lines = []
    for res in results:
        model = res["model"]
        for threads, timing in res["timings"].get("image_encoder", {}).items():
            stats = timing["stats"]
            eager = stats["eager"]["median_ms"]
            ran = {t: s["median_ms"] for t, s in stats.items() if t != "eager"}
            where = f"{model} image encoder at or below eager ({threads} thread(s))"
            if not ran:
                lines.append(f"{where}: no artifact ran — missed.")
                continue
            best = min(ran, key=ran.get)
            ratio = ran[best] / eager
            verdict = (
                f"met, {100 * (1 - ratio):.0f} % below eager"
                if ratio <= 1.0
                else f"missed, {100 * (ratio - 1):.0f} % above eager"
            )
            lines.append(
                f"{where}: best artifact {best} {ran[best]:.1f} ms vs eager {eager:.1f} ms ({ratio:.2f}×) — {verdict}."
            )
        per_target = _per_target(res, results[0]["backend_warmup_s"])
        if per_target:
            best = min(per_target, key=lambda t: per_target[t]["fresh_s"])
            lines.append(
                f"{model} conversion of one target under {CONVERSION_BUDGET_S:.0f} s: "
                + "; ".join(f"{t} {v['fresh_s']:.0f} s ({v['goal']})" for t, v in per_target.items())
                + f" — fastest {best}."
            )
    return lines


def threading_warning(threads: list[int]) -> list[str]:
    policy = os.environ.get("OMP_WAIT_POLICY")
    if max(threads) < 2 or (policy or "").upper() == "PASSIVE":
        return [f"OMP_WAIT_POLICY={policy or 'unset'}."]
    return [
        f"OMP_WAIT_POLICY={policy or 'unset'}: eager PyTorch's OpenMP threads spin-wait, and on shared cores its "
        "multi-thread figures measure the contention more than the model; rerun with OMP_WAIT_POLICY=PASSIVE."
    ]
