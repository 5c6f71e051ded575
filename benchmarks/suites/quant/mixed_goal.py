"""DINOv2-S mixed precision vs W8A8 at ≤ 60 % of its weight bytes on a target: measured, bounded, before/after AWQ.

One model, one run, held-out images the calibration never saw (the quant suite's split: scikit-image photos and
bikes.mp4 frames calibrate; scikit-learn photos and bigbuckbunny.mp4 frames judge). Each figure is the output
SQNR against fp32 of the plan's fake-quant model.

- **before**: the planning path as it was (`ptq`: BN folded, min-max activations; 4-bit Linears on g32 MSE groups).
- **after**: the same plus AWQ input-channel scaling of the LayerNorm-fed Linears (`quant.awq`, folded into the
  weights and LayerNorms; `four_bit_grid(..., calib)`), which uniform `--bits 4` now plans; `--bits mixed` does
  not, unless this benchmark shows it pays.
- For each: W8A8, uniform W4A8, greedy mixed precision at `--fractions` of W8A8's bytes on `--target` (real
  per-target costs, `quant.cost`), and GPTQ on the 60 % plan's 4-bit Linears (`quant_recipe.round_weights`).
- **Bound**: from the sensitivity table (output SQNR with one layer quantized), the least output noise *any*
  allocation within the byte budget could reach if per-layer noises add — the LP relaxation of the
  multiple-choice knapsack, so a lower bound on the table's additive noise — against W8A8's noise in the same
  units; and by how many dB every 4-bit Linear's extra noise would have to fall for the goal to become reachable.
  With `--groups`, 4-bit tables at other group sizes too, each priced as the target stores it, so the bound may
  pick a group size per layer (no lowering change needed: every target takes one group size per weight).

Run: `python -m benchmarks.suites.quant.mixed_goal [--calib 8] [--held-out 8] [--groups 16 64 128]`.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

from benchmarks.cli import publish_results
from benchmarks.suites.quant.flags import budget_subject, budget_suite_parser

GOAL_DB = 1.0  # mixed precision within 1 dB of W8A8 ...
GOAL_FRACTION = 0.6  # ... at ≤ 60 % of its weight bytes

Option = tuple[float, float, str]  # (bytes, noise, label)


def lp_bound(options: dict[str, list[Option]], budget: float) -> tuple[float, float]:
    """(least total noise, bytes used) over one option per layer within `budget`, fractions allowed (the LP
    relaxation: a lower bound on any real allocation's additive noise). inf when even the cheapest is over."""
    noise, spent, steps = 0.0, 0.0, []
    for opts in options.values():
        hull = _lower_hull(opts)
        noise, spent = noise + hull[0][1], spent + hull[0][0]
        steps += [((n0 - n1) / (c1 - c0), c1 - c0, n0 - n1) for (c0, n0, _), (c1, n1, _) in pairwise(hull)]
    if spent > budget:
        return math.inf, spent
    for _, cost, gain in sorted(steps, key=lambda s: -s[0]):
        take = min(1.0, (budget - spent) / cost)
        if take <= 0:
            break
        noise, spent = noise - take * gain, spent + take * cost
    return noise, spent


def _lower_hull(opts: list[Option]) -> list[Option]:
    """The options on the lower convex hull of (bytes, noise), cheapest first: the only ones an LP ever mixes."""
    pts = sorted(opts, key=lambda o: (o[0], o[1]))
    hull: list[Option] = []
    for p in pts:
        if hull and p[1] >= hull[-1][1]:
            continue  # costs at least as much for no less noise
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) <= 0:
            hull.pop()
        hull.append(p)
    return hull


def _cross(a: Option, b: Option, c: Option) -> float:
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def needed_reduction_db(options: Callable[[float], dict[str, list[Option]]], budget: float, goal: float) -> float:
    """dB by which every 4-bit option's extra noise (over its layer's 8-bit noise) must fall for the bound to
    reach `goal` (`options(f)` scales that extra noise by f)."""
    if lp_bound(options(1.0), budget)[0] <= goal:
        return 0.0
    if lp_bound(options(0.0), budget)[0] > goal:
        return math.inf
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if lp_bound(options(mid), budget)[0] <= goal else (lo, mid)
    return 10 * math.log10(1 / lo) if lo > 0 else math.inf


def main(argv: list[str] | None = None) -> None:
    parser = budget_suite_parser(
        "python -m benchmarks.suites.quant.mixed_goal",
        __doc__.split("\n")[0],
        name="quant_mixed",
        fractions="0.6,0.7,0.8",
    )
    parser.add_argument("--groups", type=int, nargs="*", default=[16, 64, 128], help="extra 4-bit group sizes")
    args = parser.parse_args(argv)
    started = time.time()

    from benchmarks.machine import describe_machine, load_average
    from benchmarks.report import Table
    from quant.metrics import model_outputs

    load_before = load_average()
    subject, held = budget_subject(args)
    reference = model_outputs(subject.unit.module, held)
    fractions = [float(f) for f in args.fractions.split(",")]
    runs = {
        "before": _variant(subject, held, reference, args, fractions, scale=False),
        "after (AWQ scaling)": _variant(subject, held, reference, args, fractions, scale=True),
    }
    rows = [row for name, run in runs.items() for row in run["rows"]]
    table = Table(
        f"held-out output SQNR vs fp32 ({args.model}), weight bytes as {args.target} stores them",
        ["variant", "plan", "weight bits (layers)", "weight bytes", "% of W8A8", "SQNR dB", "predicted dB"],
    )
    for r in rows:
        bits = ", ".join(f"W{b}: {n}" for b, n in sorted(r["weight_bits"].items()))
        predicted = None if r["predicted_db"] is None else f"{r['predicted_db']:.1f}"
        table.rows.append(
            [r["variant"], r["plan"], bits, f"{r['bytes']:,}", f"{r['fraction']:.1%}", f"{r['db']:.1f}", predicted]
        )
    bounds = Table(
        f"what the sensitivity table allows at {GOAL_FRACTION:.0%} of W8A8's bytes (noises assumed to add)",
        ["variant", "4-bit options", "W8A8 (table) dB", "goal dB", "best allocation dB", "4-bit noise must fall by"],
    )
    for b in [b for run in runs.values() for b in run["bounds"]]:
        best = "over budget" if math.isinf(b["bound_db"]) else f"{b['bound_db']:.1f}"
        bounds.rows.append(
            [b["variant"], b["options"], f"{b['w8_db']:.1f}", f"{b['goal_db']:.1f}", best, f"{b['needed_db']:.1f} dB"]
        )
    summary = _summary(runs, args)
    load_after = load_average()
    summary += [
        f"Model {args.model} ({subject.weights}); {len(subject.calib)} calibration, {len(held)} held-out images; "
        f"costs as {args.target} stores each weight (`quant.cost`).",
        f"The machine is shared: 1-minute load average {load_before[0]:.1f} → {load_after[0]:.1f} on "
        f"{describe_machine().get('cores_available', '?')} cores. Wall time {time.time() - started:.0f} s.",
    ]
    publish_results(
        args,
        title="Mixed precision vs W8A8 at ≤ 60 % of its bytes: measured, bounded, before/after AWQ scaling",
        machine=describe_machine(),
        tables=[table, bounds],
        summary=summary,
        data={"rows": rows, "bounds": [b for run in runs.values() for b in run["bounds"]], "runs": runs},
    )


def _variant(
    subject: Any, held: list, reference: list, args: argparse.Namespace, fractions: Sequence[float], scale: bool
) -> dict[str, Any]:
    """One prepared model (with or without AWQ scaling): its plans, their held-out SQNR, and the bounds."""
    from edgevit.pipeline.passes import quant_recipe as recipe
    from edgevit.pipeline.passes.quant import GROUP_SIZE, four_bit_grid, target_bytes
    from quant.fake_quant import apply_plan
    from quant.metrics import layer_sensitivity, model_outputs, outputs_sqnr
    from quant.mixed_precision import allocate, bytes_budget

    name = "after (AWQ scaling)" if scale else "before"
    start = time.perf_counter()
    prepared = recipe.prepare("ptq", subject.unit.module, subject.calib)
    grid = four_bit_grid(prepared, (args.target,), subject.calib if scale else None)
    table = recipe.sensitivity(prepared, subject.calib, (4, 8))
    cost = target_bytes((args.target,))
    stats = prepared.stats
    w8 = recipe.uniform_plan(prepared, 8, 8)
    w8_bytes = sum(cost(layer) or 0.0 for layer in w8.layers.values())
    rows: list[dict[str, Any]] = []

    def add(label: str, plan: Any, module: Any = None) -> float:
        db = outputs_sqnr(reference, model_outputs(apply_plan(module or prepared.module, plan), held))
        used = sum(cost(layer) or 0.0 for layer in plan.layers.values())
        rows.append(
            {
                "variant": name,
                "plan": label,
                "weight_bits": {str(k): v for k, v in plan.summary()["weight_bits"].items()},
                "bytes": int(used),
                "fraction": used / w8_bytes,
                "db": db,
                "predicted_db": plan.metadata.get("predicted_sqnr_db"),
            }
        )
        print(f"{name}: {label}: {db:.2f} dB at {used / w8_bytes:.1%}", flush=True)
        return db

    w8_db = add("W8A8 (uniform)", w8)
    add("W4A8 (uniform)", recipe.uniform_plan(prepared, 4, 8))
    mixed, mixed_db = {}, {}
    for f in fractions:
        mixed[f] = allocate(stats, table, [bytes_budget(f * w8_bytes / 1e6, cost)])
        mixed_db[f] = add(f"mixed, {f:.0%} of W8A8 bytes", mixed[f])
    goal_plan = mixed.get(GOAL_FRACTION)
    if goal_plan is not None:
        rounded = recipe.round_weights(prepared, goal_plan, subject.calib, "gptq")
        add(f"mixed, {GOAL_FRACTION:.0%} + GPTQ on its 4-bit Linears", goal_plan, rounded)

    # Bounds: per layer, (bytes, noise) of each candidate; 8-bit and g32 4-bit from the table, other groups measured.
    extra = {}
    for g in args.groups:
        stats.use_groups({4: g}, "mse")
        probe = subject.calib[: recipe.SENSITIVITY_IMAGES]
        extra[g] = layer_sensitivity(prepared.module, stats, probe, (4,), (8,), progress=False)
    stats.use_groups({4: GROUP_SIZE}, "mse")
    w8_noise = sum(table.noise(n, 8, 8) for n in stats.layers)
    goal_noise = w8_noise * 10 ** (GOAL_DB / 10)
    budget = GOAL_FRACTION * w8_bytes

    measured: dict[str, list[tuple[float | None, float, str]]] = {}  # per layer: (bytes, 4-bit noise, label)
    for g in (GROUP_SIZE, *args.groups):
        stats.use_groups({4: g}, "mse")
        for layer, s in stats.layers.items():
            sqnr = (table if g == GROUP_SIZE else extra[g]).sqnr_db[layer][(4, 8)]
            measured.setdefault(layer, []).append((cost(s.layer_quant(4, 8, "x")), 10 ** (-sqnr / 10), f"g{g}"))
    stats.use_groups({4: GROUP_SIZE}, "mse")
    w8_costs = {layer: cost(s.layer_quant(8, 8, "x")) for layer, s in stats.layers.items()}

    def options(groups: Sequence[int], shrink: float = 1.0) -> dict[str, list[Option]]:
        """Each layer's candidates; 4-bit ones with their extra noise over 8-bit scaled by `shrink`."""
        found: dict[str, list[Option]] = {}
        for layer in stats.layers:
            n8 = table.noise(layer, 8, 8)
            opts = [(w8_costs[layer], n8, "W8")]
            for c, n4, label in measured[layer]:
                if int(label[1:]) in groups:
                    opts.append((c, n8 + shrink * max(0.0, n4 - n8), label))
            found[layer] = [o for o in opts if o[0] is not None]
        return found

    w4 = recipe.uniform_plan(prepared, 4, 8)
    floors = {}  # uniform W4 g32 as a fraction of W8A8 on each target: no mixed plan is cheaper
    for t in ("executorch", "onnx", "coreml"):
        held_cost = target_bytes((t,))
        floors[t] = sum(held_cost(x) or 0.0 for x in w4.layers.values()) / sum(
            held_cost(x) or 0.0 for x in w8.layers.values()
        )
    bounds = []
    for groups in [(GROUP_SIZE,)] + ([(GROUP_SIZE, *args.groups)] if args.groups else []):
        noise, _ = lp_bound(options(groups), budget)
        needed = needed_reduction_db(lambda f, groups=groups: options(groups, f), budget, goal_noise)
        bounds.append(
            {
                "variant": name,
                "options": ", ".join(f"g{g}" for g in groups),
                "w8_db": -10 * math.log10(w8_noise),
                "goal_db": -10 * math.log10(goal_noise),
                "bound_db": -10 * math.log10(noise) if math.isfinite(noise) else -math.inf,
                "needed_db": needed,
            }
        )
    layers = {
        n: {"W8A8": table.sqnr_db[n][(8, 8)], "W4A8 g32": table.sqnr_db[n][(4, 8)]}
        | {f"W4A8 g{g}": extra[g].sqnr_db[n][(4, 8)] for g in args.groups}
        for n in stats.layers
    }
    return {
        "rows": rows,
        "bounds": bounds,
        "grid": grid,
        "w8_db": w8_db,
        "mixed_db": mixed_db.get(GOAL_FRACTION),
        "w4_floor_fraction": floors,
        "w8_bytes": w8_bytes,
        "layers": layers,
        "seconds": round(time.perf_counter() - start, 1),
    }


def _summary(runs: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[str]:
    before, after = runs["before"], runs["after (AWQ scaling)"]
    lines = []
    for label, w8 in (("our W8A8 as shipped (ptq)", before["w8_db"]), ("W8A8 with AWQ scaling", after["w8_db"])):
        for name, run in runs.items():
            gap = run["mixed_db"] - w8
            verdict = "MET" if gap >= -GOAL_DB else "MISSED"
            lines.append(
                f"Goal, mixed within {GOAL_DB:g} dB of {label} ({w8:.1f} dB) at {GOAL_FRACTION:.0%} of its bytes on "
                f"{args.target}, {name}: {run['mixed_db']:.1f} dB (Δ {gap:+.1f} dB) — {verdict}."
            )
    for run in runs.values():
        for b in run["bounds"]:
            best = "over the budget" if math.isinf(b["bound_db"]) else f"{b['bound_db']:.1f} dB"
            lines.append(
                f"Bound ({b['variant']}, 4-bit {b['options']}): the best allocation the table allows is {best} vs "
                f"W8A8 {b['w8_db']:.1f} dB in the table's additive units (goal {b['goal_db']:.1f}); every 4-bit "
                f"Linear's extra noise would have to fall by {b['needed_db']:.1f} dB."
            )
    floors = ", ".join(f"{t} {f:.1%}" for t, f in before["w4_floor_fraction"].items())
    lines.append(f"Uniform W4 (g32, 4-bit conv weights as each target holds them) costs, of W8A8's bytes: {floors}.")
    lines.append(f"4-bit grid: before: {before['grid']}; after: {after['grid']}.")
    return lines


if __name__ == "__main__":
    main()
