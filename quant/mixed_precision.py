"""Greedy mixed-precision bit allocation (MPTQ-ViT's Greedy MP) under a budget: bytes, or measured milliseconds.

Why greedy on a sensitivity table: layers differ by orders of magnitude in how much output error their
quantization causes, so spending bits where the table says they matter beats any uniform bit-width of
the same size. Every layer starts at its highest candidate bits; while a budget is exceeded, the move (one layer
to another of its widths) that adds the least output noise per unit of budget saved is taken; then leftover room
is spent on the moves that remove the most noise per unit spent. Noise is the relative output noise power
10^(-SQNR/10) of the table, which adds across layers (dB does not).

What a budget counts is a `Budget`: a limit and a `cost(layer) -> float | None` of one candidate layer (its
`LayerQuant`: kind, shape, bits and the grid the plan will hold), None when that candidate cannot be held. Bytes
come from `quant.cost` (what each target really stores); milliseconds from a measured cost the caller supplies
(`edgevit.compress.bitsearch` benches each layer's real artifact kernel on the device and corrects it with
whole-unit anchor plans benched beside it), so this module never imports a runtime. Moves are not only one
notch down: on a real runtime a narrower width can be *slower* (4-bit conv weights held in int8 storage, a GEMM
without a 4-bit kernel, a dynamic per-token quantize of its input), and the search takes what is measured.

A layer may also stay float (`FLOAT`): left out of the plan, it adds no quantization noise, and a budget that
prices it (`Budget.float_cost`: the measured latency does) lets the search spend the room narrower widths leave on
keeping the most sensitive layers float. A bytes budget never offers it: a float weight stores 4× its 8-bit bytes,
so under any budget relative to W8A8's bytes it cannot pay, and `quant.cost` prices quantized payloads only.

Every step is recorded in the plan's `metadata["allocation"]`: per layer its bits, its measured sensitivity
(output SQNR with that layer alone quantized at those bits), its cost, and why it got them; the layers kept float
are listed there too (`float_layers`: the plan itself only holds what is quantized).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.table import Table

from quant.cost import payload_bytes
from quant.errors import QuantError
from quant.fake_quant import CalibrationStats
from quant.metrics import SensitivityTable
from quant.plan import LayerQuant, QuantPlan

_MB = 1e6
_MAX_STEPS = 100_000

LayerCost = Callable[[LayerQuant], "float | None"]
FloatCost = Callable[[str], "float | None"]

FLOAT: tuple[int, int] = (32, 32)
"""The choice of (weight bits, act bits) that keeps a layer float: it is left out of the plan (whatever is not in
the plan runs in fp32), so it adds no quantization noise. Ordered above every integer width."""


@dataclass(frozen=True)
class Budget:
    """One limit the plan must hold: `cost(layer)` summed over layers plus `fixed` ≤ `limit`, in `unit`."""

    kind: str
    limit: float
    cost: LayerCost
    unit: str = "B"
    fixed: float = 0.0  # what no bit choice changes (e.g. the latency of ops that stay float)
    scale: float = 1.0  # `unit` per displayed unit (1e6 for MB)
    display: str = "B"
    activations: bool = False  # whether `cost` depends on activation bits (else they stay at their highest)
    float_cost: FloatCost | None = None  # cost of leaving layer `name` float (None: this budget cannot hold float)


def bytes_budget(budget_mb: float, cost: LayerCost | None = None, kind: str = "weight") -> Budget:
    """A weight budget in MB; `cost` defaults to the packed integer payload (use `quant.cost` for a target)."""
    return Budget(kind, budget_mb * _MB, cost or payload_bytes, "B", scale=_MB, display="MB")


def latency_budget(budget_ms: float, cost: LayerCost, fixed_ms: float, float_cost: FloatCost | None = None) -> Budget:
    """A latency budget: `cost(layer)` is the ms that layer at its bits adds to the whole unit (measured; it may
    be larger at fewer bits), `fixed_ms` the rest of the unit; `float_cost(name)`, when given, the ms the layer
    adds left float (None where it was not measured), which lets the search keep layers float (`FLOAT`)."""
    return Budget("latency", budget_ms, cost, "ms", fixed=fixed_ms, display="ms", float_cost=float_cost)


@dataclass
class _Layer:
    name: str
    choices: list[tuple[int | None, int]]  # (weight bits, act bits), highest first
    costs: dict[tuple[int | None, int], dict[str, float]] = field(default_factory=dict)


def greedy_allocate(
    stats: CalibrationStats,
    table: SensitivityTable,
    budget_mb: float,
    *,
    activation_budget_mb: float | None = None,
    weight_cost: LayerCost | None = None,
) -> QuantPlan:
    """A plan whose quantized weights fit `budget_mb` (as `weight_cost` counts them: default the packed payload;
    `quant.cost.weight_bytes` for what a target stores), with bits chosen by the sensitivity table."""
    budgets = [bytes_budget(budget_mb, weight_cost)]
    if activation_budget_mb is not None:

        def act_bytes(layer: LayerQuant) -> float:
            return stats.layers[layer.name].input_numel * layer.act_bits / 8

        budgets.append(Budget("activation", activation_budget_mb * _MB, act_bytes, "B", 0.0, _MB, "MB", True))
    plan = allocate(stats, table, budgets)
    plan.metadata.update({"budget_mb": budget_mb, "activation_budget_mb": activation_budget_mb})
    return plan


def allocate(stats: CalibrationStats, table: SensitivityTable, budgets: Sequence[Budget]) -> QuantPlan:
    """The greedy plan under every budget in `budgets` (see the module docstring)."""
    missing = [n for n in stats.layers if n not in table.sqnr_db]
    if missing:
        raise QuantError(f"layer {missing[0]!r} has no sensitivity entry: measure the table on the same stats")
    quants: dict[tuple[str, int | None, int], LayerQuant] = {}

    def quant(name: str, choice: tuple[int | None, int]) -> LayerQuant:
        key = (name, *choice)
        if key not in quants:
            quants[key] = stats.layers[name].layer_quant(choice[0], choice[1], "greedy-mp")
        return quants[key]

    # Narrower activations only add noise unless a budget prices them; float only where every budget prices it.
    top_act = None if any(b.activations for b in budgets) else max(table.act_bits)
    floats = all(b.float_cost is not None for b in budgets)
    layers = []
    for name in stats.layers:
        order = sorted(table.choices(name), key=lambda c: (-1 if c[0] is None else c[0], c[1]), reverse=True)
        order = [c for c in order if top_act is None or c[1] == top_act]
        lyr = _Layer(name, [])
        if floats:
            float_costs = {b.kind: b.float_cost(name) for b in budgets}  # type: ignore[misc]
            if all(v is not None for v in float_costs.values()):
                lyr.choices.append(FLOAT)
                lyr.costs[FLOAT] = float_costs  # type: ignore[assignment]
        for choice in order:
            costs = {b.kind: b.cost(quant(name, choice)) for b in budgets}
            if all(v is not None for v in costs.values()):
                lyr.choices.append(choice)
                lyr.costs[choice] = costs  # type: ignore[assignment]
        if not lyr.choices:
            raise QuantError(f"layer {name!r} has no bit-width every budget can cost (e.g. the target cannot hold it)")
        layers.append(lyr)
    by_name = {lyr.name: lyr for lyr in layers}
    limits = {b.kind: b for b in budgets}

    def total(state: dict[str, tuple[int | None, int]]) -> dict[str, float]:
        return {k: b.fixed + sum(lyr.costs[state[lyr.name]][k] for lyr in layers) for k, b in limits.items()}

    for kind, b in limits.items():
        cheapest = [min(lyr.choices, key=lambda c, lyr=lyr: lyr.costs[c][kind]) for lyr in layers]
        floor = b.fixed + sum(lyr.costs[c][kind] for lyr, c in zip(layers, cheapest, strict=True))
        if floor > b.limit:
            widths = {c[0] for c in cheapest if c[0] is not None and c != FLOAT}
            at = f", with every layer at {widths.pop()} bits," if len(widths) == 1 else ", every layer at its cheapest,"
            raise QuantError(
                f"{kind} budget {b.limit / b.scale:.4g} {b.display} cannot be met: the smallest reachable {kind}"
                f"{' size' if b.unit == 'B' else ''}{at} is {floor / b.scale:.4g} {b.display}"
            )

    def noise(name: str, choice: tuple[int | None, int]) -> float:
        return 0.0 if choice == FLOAT else table.noise(name, *choice)

    state = {lyr.name: lyr.choices[0] for lyr in layers}
    why: dict[str, str] = {}
    steps = 0

    def describe(phase: str, name: str, old: tuple, new: tuple, delta: dict[str, float], candidates: int) -> str:
        moved = ", ".join(f"{v / limits[k].scale:+.3g} {limits[k].display}" for k, v in delta.items())
        added = noise(name, new) - noise(name, old)
        if phase == "down":
            least = f"least per unit saved of {candidates}"
            return f"step {steps}: {_bits(old)}→{_bits(new)} ({moved}), +{added:.2g} noise: {least}"
        if new == FLOAT:
            return (
                f"step {steps}: stays float (left out of the plan) with room left ({moved}): removes its "
                f"{_bits(old)} noise {-added:.2g} (output SQNR with it alone at {_bits(old)}: "
                f"{table.sqnr_db[name][old]:.1f} dB), the most noise removed per unit spent"
            )
        return f"step {steps}: raised {_bits(old)}→{_bits(new)} with room left ({moved}), −{-added:.2g} noise"

    def delta_of(lyr: _Layer, new: tuple[int | None, int]) -> dict[str, float]:
        return {k: lyr.costs[new][k] - lyr.costs[state[lyr.name]][k] for k in limits}

    # Move until every budget holds: least added noise per (budget-normalised) unit saved. Per layer and
    # direction only the nearest width that saves is a move: one notch when costs fall with the bits, a jump
    # over a width that costs more (measured latency) when they do not.
    while True:
        current = total(state)
        violated = [k for k, b in limits.items() if current[k] > b.limit]
        if not violated:
            break
        best, best_score, considered = None, math.inf, 0
        for lyr in layers:
            old = state[lyr.name]
            for side in _sides(lyr, old):
                for new in side:
                    delta = delta_of(lyr, new)
                    saved = sum(-delta[k] / limits[k].limit for k in violated)
                    if saved <= 0 or any(d > 0 and current[k] + d > limits[k].limit for k, d in delta.items()):
                        continue
                    considered += 1
                    score = (noise(lyr.name, new) - noise(lyr.name, old)) / saved
                    if score < best_score:
                        best, best_score = (lyr, new, delta), score
                    break
        if best is None or steps >= _MAX_STEPS:
            raise QuantError(f"no move brings the plan under its {', '.join(violated)} budget (stuck at step {steps})")
        steps += 1
        lyr, new, delta = best
        why[lyr.name] = describe("down", lyr.name, state[lyr.name], new, delta, considered)
        state[lyr.name] = new

    # Spend what is left: most noise removed per unit spent, as long as every budget still holds.
    while steps < _MAX_STEPS:
        current = total(state)
        best, best_score = None, 0.0
        for lyr in layers:
            old = state[lyr.name]
            for side in _sides(lyr, old):
                for new in side:
                    gain = noise(lyr.name, old) - noise(lyr.name, new)
                    delta = delta_of(lyr, new)
                    if gain <= 0 or any(current[k] + d > limits[k].limit for k, d in delta.items()):
                        continue
                    spent = sum(d / limits[k].limit for k, d in delta.items())
                    score = gain / spent if spent > 0 else math.inf
                    if score > best_score:
                        best, best_score = (lyr, new, delta), score
                    break
        if best is None:
            break
        steps += 1
        lyr, new, delta = best
        why[lyr.name] = describe("up", lyr.name, state[lyr.name], new, delta, 0)
        state[lyr.name] = new

    kept_float = [name for name, choice in state.items() if choice == FLOAT]
    plan = stats.plan(bits={n: c for n, c in state.items() if c != FLOAT}, method="greedy-mp")
    plan.layers = {name: quant(name, state[name]) for name in stats.layers if state[name] != FLOAT}
    predicted = sum(noise(n, c) for n, c in state.items())
    used = total(state)
    plan.metadata.update(
        {
            "predicted_sqnr_db": -10 * math.log10(predicted) if predicted > 0 else math.inf,
            "allocation": {
                "steps": steps,
                "budgets": [
                    {"kind": b.kind, "unit": b.unit, "limit": b.limit, "used": used[b.kind], "fixed": b.fixed}
                    for b in budgets
                ],
                "layers": {
                    name: {
                        "weight_bits": None if choice == FLOAT else choice[0],
                        "act_bits": None if choice == FLOAT else choice[1],
                        "float": choice == FLOAT,
                        "sqnr_db": None if choice == FLOAT else table.sqnr_db[name][choice],
                        "sqnr_drop_db": _drop(table, name, choice, _widest(by_name[name])),
                        "noise_share": noise(name, choice) / predicted if predicted > 0 else 0.0,
                        "cost": by_name[name].costs[choice],
                        "why": why.get(name, _kept(by_name[name], steps)),
                    }
                    for name, choice in state.items()
                },
                "float_layers": kept_float,
                "float_weight_bytes": sum(4 * table.weight_numel[n] for n in kept_float),
            },
        }
    )
    return plan


def _sides(lyr: _Layer, old: tuple[int | None, int]) -> tuple[list, list]:
    """The layer's other widths, nearest first: narrower ones, then wider ones."""
    i = lyr.choices.index(old)
    return lyr.choices[i + 1 :], lyr.choices[:i][::-1]


def _bits(choice: tuple[int | None, int]) -> str:
    w, a = choice
    if choice == FLOAT:
        return "float"
    return f"W{w}A{a}" if w is not None else f"A{a}"


def _widest(lyr: _Layer) -> tuple[int | None, int]:
    """The layer's highest quantized candidate (what a float layer would otherwise hold)."""
    return next(c for c in lyr.choices if c != FLOAT)


def _drop(
    table: SensitivityTable, name: str, choice: tuple[int | None, int], top: tuple[int | None, int]
) -> float | None:
    """dB of output SQNR this layer's width costs against its highest quantized candidate (0 when it kept it;
    None when it stays float: it costs nothing, and its SQNR alone is infinite)."""
    if choice == FLOAT:
        return None
    best, got = table.sqnr_db[name][top], table.sqnr_db[name][choice]
    return 0.0 if choice == top or best == got else float(best - got)


def _kept(lyr: _Layer, steps: int) -> str:
    if len(lyr.choices) == 1:
        return f"only {_bits(lyr.choices[0])} can be held here"
    if lyr.choices[0] == FLOAT:
        if steps == 0:
            return "stays float (left out of the plan): every layer float fits the budget"
        return "stays float (left out of the plan): moves elsewhere added less noise per unit saved"
    if steps == 0:
        return "the highest width fits the budget"
    return "kept its widest: moves elsewhere added less noise per unit saved"


def explain(table: SensitivityTable, plan: QuantPlan | None = None) -> Table | Group:
    """The sensitivity table as a rich table (SQNR dB per candidate); with an allocated plan, a second table of
    its choice per layer: bits, measured sensitivity at those bits (and the dB they cost against the widest),
    cost per budget, and the greedy step that gave them, with each budget and what was used in the caption."""
    columns = [(w, a) for w in table.weight_bits for a in table.act_bits]
    if any(kind == "matmul" for kind in table.kinds.values()):
        columns += [(None, a) for a in table.act_bits]
    out = Table(title="output SQNR (dB) with one layer quantized", caption=None)
    out.add_column("layer")
    out.add_column("kind")
    out.add_column("weights", justify="right")
    for w, a in columns:
        out.add_column(f"W{w}A{a}" if w is not None else f"A{a}", justify="right")
    for name in table.layers:
        row = [name, table.kinds[name], f"{table.weight_numel[name]:,}"]
        row += [f"{table.sqnr_db[name][c]:.1f}" if c in table.sqnr_db[name] else "" for c in columns]
        out.add_row(*row)
    allocation = plan.metadata.get("allocation") if plan is not None else None
    if plan is None or not allocation:
        return out
    budgets = allocation["budgets"]
    choice = Table(title="the plan's choice", caption="; ".join(_budget_line(b) for b in budgets))
    choice.add_column("layer", no_wrap=True)
    for col in ("bits", "SQNR dB", "−dB"):
        choice.add_column(col, justify="right", no_wrap=True)
    for b in budgets:
        choice.add_column(
            b["kind"] + (" bytes" if b["unit"] == "B" else f" {b['unit']}"), justify="right", no_wrap=True
        )
    choice.add_column("why")
    for name, got in allocation["layers"].items():
        cost = [_fmt(got["cost"][b["kind"]], b["unit"]) for b in budgets]
        if got.get("float"):
            choice.add_row(name, "float", "∞", "", *cost, got["why"])
            continue
        bits = _bits((got["weight_bits"], got["act_bits"]))
        choice.add_row(name, bits, f"{got['sqnr_db']:.1f}", f"{got['sqnr_drop_db']:.1f}", *cost, got["why"])
    kept = allocation.get("float_layers")
    if kept:
        choice.caption += f"; stays float (left out of the plan): {', '.join(kept)}"
    return Group(out, choice)


def _budget_line(b: dict[str, Any]) -> str:
    if b["unit"] == "B":
        return f"{b['kind']} budget {b['limit'] / _MB:.4g} MB, used {b['used'] / _MB:.4g} MB ({b['used']:,.0f} bytes)"
    fixed = f" (of which {b['fixed']:.3g} {b['unit']} not set by bits)" if b["fixed"] else ""
    return f"{b['kind']} budget {b['limit']:.4g} {b['unit']}, predicted {b['used']:.4g} {b['unit']}{fixed}"


def _fmt(value: float, unit: str) -> str:
    return f"{value:,.0f}" if unit == "B" else f"{value:.3g}"
