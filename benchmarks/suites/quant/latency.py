"""Bit widths chosen by measured latency vs by bytes, and mixed precision vs W8A8 at ≤ 60 % of its bytes.

One model, one target, one device, one run. The model is calibrated once (`ptq`: BN folded, min-max
activations; 4-bit weights on the mixed plans' grid, `edgevit.pipeline.passes.quant.four_bit_grid`), one
sensitivity table (4- and 8-bit weights) serves every plan, and every figure is the output SQNR against fp32 on
held-out images the calibration never saw (scikit-learn's photos and bigbuckbunny.mp4 frames), computed on the
plan's fake-quant model.

- **Bytes proxy**: greedy mixed precision under a weight budget (`--fractions` of the W8A8 plan's bytes on the
  target, real per-target costs from `quant.cost`).
- **Latency-driven**: `edgevit.compress.bitsearch` as `--budget-ms` runs it: per-layer probes (4 and 8 bits, and
  float: the layer left out of the plan) corrected by whole-unit anchor plans (highest widths, all lowest, all
  float, each group of identical layers flipped to 4 bits and to float), the greedy search on those costs, which
  may spend the room under the budget on keeping the most sensitive layers float, and the floor (W8A8 when
  narrower widths buy no time, or when a plan with float layers measures over its budget). Its budget is each
  bytes-proxy plan's latency as the fitted costs predict it (the same cost model on both sides).
- **Mixed vs W8A8**: greedy mixed precision at 60 % of the W8A8 plan's bytes on the target vs W8A8.

W8A8 and every plan of the comparison are lowered and benched in one bundle, one after the other (the harness runs
each in its own process), so their measured latencies are compared within one run; the floor is settled on that
W8A8 time. On a shared machine the load drifts between artifacts, so latencies within a few percent are a tie.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from benchmarks.cli import publish_results
from benchmarks.suites.quant.flags import budget_subject, budget_suite_parser

GOAL_LATENCY_DB = 1.0  # latency-driven ≥ 1 dB above the bytes proxy at the same measured latency
GOAL_MIXED_DB = 1.0  # mixed precision within 1 dB of W8A8 ...
MIXED_FRACTION = 0.6  # ... at ≤ 60 % of its bytes
SAME_LATENCY = 1.05  # measured latencies within 5 % count as the same (one bundle, benched in sequence)


def main(argv: list[str] | None = None) -> None:
    parser = budget_suite_parser(
        "python -m benchmarks.suites.quant.latency", __doc__.split("\n")[0], name="quant_latency", fractions="0.6,0.8"
    )
    parser.add_argument("--device", default="local")
    args = parser.parse_args(argv)
    started = time.time()

    from benchmarks.machine import describe_machine, load_average
    from edgevit.compress.bitsearch import MeasuredCost
    from edgevit.compress.latency_search import TOP_UNIT, bench_with_retry, search, settle
    from edgevit.pipeline.passes import quant_recipe as recipe
    from edgevit.pipeline.passes.quant import four_bit_grid, target_bytes
    from quant.cost import plan_bytes
    from quant.fake_quant import apply_plan
    from quant.metrics import model_outputs, outputs_sqnr
    from quant.mixed_precision import allocate, bytes_budget

    load_before = load_average()
    subject, held = budget_subject(args)
    prepared = recipe.prepare("ptq", subject.unit.module, subject.calib)
    grid = four_bit_grid(prepared, (args.target,))
    table = recipe.sensitivity(prepared, subject.calib, (4, 8))
    reference = model_outputs(subject.unit.module, held)
    stats = prepared.stats
    unit = dataclasses.replace(subject.unit, module=prepared.module)

    def held_out_db(plan: Any) -> float:
        return outputs_sqnr(reference, model_outputs(apply_plan(prepared.module, plan), held))

    w8 = recipe.uniform_plan(prepared, 8, 8)
    w8_bytes = plan_bytes(w8, args.target)
    cost = MeasuredCost(unit, stats, table, args.target, args.device, progress=print)
    per_target = target_bytes((args.target,))

    def by_bytes(fraction: float) -> Any:
        return allocate(stats, table, [bytes_budget(fraction * w8_bytes / 1e6, per_target)])

    fractions = [float(f) for f in args.fractions.split(",")]
    proxies = {f: by_bytes(f) for f in fractions}
    searched = {f: search(cost, table, cost.predict(proxies[f])) for f in fractions}
    # One bundle: the highest widths (the floor's reference), each proxy plan and each searched plan the floor
    # did not already settle (a budget W8A8 meets needs no other artifact).
    bench = [(_named(unit, TOP_UNIT), cost.top)]
    named: dict[str, float] = {}  # the searched plans' unit names
    for f in fractions:
        bench.append((_named(unit, f"bytes{round(f * 100)}"), proxies[f]))
        if not searched[f].metadata["latency"]["floor"]:
            named[f"latency{round(f * 100)}"] = f
            bench.append((_named(unit, f"latency{round(f * 100)}"), searched[f]))
    print(f"benching W8A8 and {len(bench) - 1} plan(s) in one bundle")
    in_bundle = {n: searched[f] for n, f in named.items()}
    ms, benched = bench_with_retry(bench, in_bundle, cost, table, args.target, args.device)
    searched.update({named[n]: plan for n, plan in benched.items()})
    top_ms = ms[TOP_UNIT]
    chosen = {
        f: settle(searched[f], ms.get(f"latency{round(f * 100)}", top_ms), cost, table, top_ms) for f in fractions
    }

    rows = [_row("W8A8 (highest widths)", cost.top, held_out_db(cost.top), top_ms, cost, None, args.target)]
    comparisons = []
    for f in fractions:
        proxy, lat = proxies[f], chosen[f]
        record = lat.metadata["latency"]
        p_ms, l_ms = ms[f"bytes{round(f * 100)}"], record["measured_ms"]
        p_db, l_db = held_out_db(proxy), held_out_db(lat)
        rows.append(_row(f"bytes proxy, {f:.0%} of W8A8 bytes", proxy, p_db, p_ms, cost, None, args.target))
        label = f"latency-driven, budget {record['budget_ms']:.3g} ms" + (" (floor: W8A8)" if record["floor"] else "")
        rows.append(_row(label, lat, l_db, l_ms, cost, record["budget_ms"], args.target))
        comparisons.append(
            {
                "fraction": f,
                "proxy_ms": p_ms,
                "latency_ms": l_ms,
                "proxy_db": p_db,
                "latency_db": l_db,
                "budget_ms": record["budget_ms"],
                "floor": record["floor"],
                "searched_measured_ms": record.get("searched_measured_ms"),
                "searched_predicted_ms": record.get("searched_predicted_ms"),
                "searched_db": held_out_db(searched[f])
                if record["floor"] and "searched_measured_ms" in record
                else None,
                "float_layers": record["float_layers"],
                "searched_float_layers": record.get("searched_float_layers"),
                "retightened": record.get("retightened"),
            }
        )
    mixed = by_bytes(MIXED_FRACTION)
    w8_db, mixed_db = held_out_db(w8), held_out_db(mixed)
    rows.append(_row(f"mixed, {MIXED_FRACTION:.0%} of W8A8 bytes", mixed, mixed_db, None, cost, None, args.target))

    summary = []
    for c in comparisons:
        same = c["latency_ms"] <= c["proxy_ms"] * SAME_LATENCY
        gain = c["latency_db"] - c["proxy_db"]
        verdict = "met" if same and gain >= GOAL_LATENCY_DB else "missed"
        floor = f"; {len(c['float_layers'])} layer(s) kept float" if c["float_layers"] else ""
        if c["retightened"]:
            again = c["retightened"]
            floor += (
                f" (searched again under {again['searched_under_ms']:.4g} ms after the first plan, "
                f"{len(again['first_float_layers'])} float, measured {again['first_measured_ms']:.4g} ms)"
            )
        if c["floor"]:
            floor = f"; the floor took W8A8: {c['floor']}"
            if c["searched_db"] is not None:
                floor += f" (the searched plan: {c['searched_db']:.1f} dB)"
        summary.append(
            f"Goal, latency-driven ≥ {GOAL_LATENCY_DB:g} dB above the bytes proxy at the same measured latency "
            f"({c['fraction']:.0%} bytes budget): {c['latency_db']:.1f} dB at {c['latency_ms']:.3g} ms vs "
            f"{c['proxy_db']:.1f} dB at {c['proxy_ms']:.3g} ms (Δ {gain:+.1f} dB"
            f"{'' if same else '; its measured latency is over the proxy plan’s by more than 5 %'}{floor}) — {verdict}."
        )
    mixed_bytes = plan_bytes(mixed, args.target)
    gap = mixed_db - w8_db
    summary.append(
        f"Goal, mixed precision within {GOAL_MIXED_DB:g} dB of W8A8 at ≤ {MIXED_FRACTION:.0%} of its bytes: "
        f"{mixed_db:.1f} dB at {mixed_bytes / w8_bytes:.0%} ({mixed_bytes:,} of {w8_bytes:,} bytes on "
        f"{args.target}) vs W8A8 {w8_db:.1f} dB (Δ {gap:+.1f} dB) — {'met' if gap >= -GOAL_MIXED_DB else 'missed'}."
    )
    record = cost.record()
    worst_bare = max(abs(a["bare_probes_ms"] - a["measured_ms"]) / a["measured_ms"] for a in record["anchors"])
    worst_fit = max(abs(a["fitted_ms"] - a["measured_ms"]) / a["measured_ms"] for a in record["anchors"])
    load_after = load_average()
    summary += [
        f"Model {args.model} ({subject.weights}); {len(subject.calib)} calibration, {len(held)} held-out images; "
        f"target {args.target} on device {args.device}; 4-bit grid: {grid}.",
        f"Per-layer latency: {len(cost.probes)} probe(s) (identical layers share one), idle call "
        f"{record['idle_ms']:.3g} ms subtracted, corrected by {len(record['anchors'])} whole-unit anchor plan(s) "
        f"benched with them: worst anchor error {worst_bare:.0%} from the bare probes, {worst_fit:.0%} fitted. "
        f"Highest widths {cost.top_ms:.3g} ms in that bundle, {top_ms:.3g} ms beside the compared plans.",
        f"The machine is shared: 1-minute load average {load_before[0]:.1f} → {load_after[0]:.1f} on "
        f"{describe_machine().get('cores_available', '?')} cores; latencies are medians of sequential runs, "
        f"compare within a run only. Wall time {time.time() - started:.0f} s.",
    ]
    publish_results(
        args,
        title="Quantization bit widths by measured latency vs by bytes, and mixed precision vs W8A8",
        machine=describe_machine(),
        tables=[_table(rows), _anchors(record)],
        summary=summary,
        data={"rows": rows, "comparisons": comparisons, "cost_model": record, "probe_ms": cost.ms},
    )


def _named(unit: Any, name: str) -> Any:
    return dataclasses.replace(unit, name=name)


def _row(
    label: str, plan: Any, db: float, ms: float | None, cost: Any, budget_ms: float | None, target: str
) -> dict[str, Any]:
    """One plan's figures; a layer the plan keeps float counts as "float" in its bits and 4 bytes a weight."""
    from quant.cost import plan_bytes

    floated = cost.floated(plan)
    bits = {**plan.summary()["weight_bits"], **({"float": len(floated)} if floated else {})}
    float_bytes = sum(4 * cost.unit.module.get_submodule(n).weight.numel() for n in floated)
    return {
        "plan": label,
        "weight_bits": bits,
        "float_layers": floated,
        "weight_bytes": plan_bytes(plan, target) + float_bytes,
        "held_out_sqnr_db": db,
        "measured_ms": ms,
        "predicted_ms": cost.predict(plan),
        "bare_probes_ms": cost.predict(plan, bare=True),
        "budget_ms": budget_ms,
    }


def _table(rows: list[dict[str, Any]]) -> Any:
    from benchmarks.report import Table

    columns = [
        "plan",
        "weight bits (layers)",
        "weight bytes",
        "SQNR dB",
        "measured ms",
        "predicted ms",
        "bare probes ms",
        "budget ms",
    ]
    table = Table("held-out output SQNR vs fp32, weight bytes on the target, latency measured and predicted", columns)
    table.notes.append(
        "predicted: the probe costs corrected by the anchors; bare probes: stop 17's model; float: layers left out "
        "of the plan (fp32, 4 bytes a weight)"
    )
    for r in rows:
        bits = ", ".join(f"{b if b == 'float' else f'W{b}'}: {n}" for b, n in r["weight_bits"].items())
        cells = [
            None if r[k] is None else f"{r[k]:.3g}"
            for k in ("measured_ms", "predicted_ms", "bare_probes_ms", "budget_ms")
        ]
        table.rows.append([r["plan"], bits, f"{r['weight_bytes']:,}", f"{r['held_out_sqnr_db']:.1f}", *cells])
    return table


def _anchors(record: dict[str, Any]) -> Any:
    from benchmarks.report import Table

    table = Table(
        "whole-unit anchor plans: measured vs predicted ms",
        ["anchor plan", "measured ms", "bare probes ms", "fitted ms"],
    )
    for a in record["anchors"]:
        table.rows.append([a["plan"], f"{a['measured_ms']:.3g}", f"{a['bare_probes_ms']:.3g}", f"{a['fitted_ms']:.3g}"])
    return table


if __name__ == "__main__":
    main()
