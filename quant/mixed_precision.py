"""Greedy mixed-precision bit allocation (MPTQ-ViT's Greedy MP) under a weight-size budget.

Why greedy on a sensitivity table: layers differ by orders of magnitude in how much output error their
quantization causes, so spending bits where the table says they matter beats any uniform bit-width of
the same size. Every layer starts at its highest candidate bits; while a budget is exceeded, the step
down (one layer, one bit-width notch) that adds the least output noise per byte saved is taken; then
leftover room is spent on the steps up that remove the most noise per byte. Noise is the relative output
noise power 10^(-SQNR/10) of the table, which adds across layers (dB does not).

Budgets: weights in MB (10^6 bytes, packed integer payload of the quantized layers — what a phone
downloads and maps), and optionally the activation bytes those layers read per sample, which is what
makes lower activation bit candidates worth anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.table import Table

from quant.errors import QuantError
from quant.fake_quant import CalibrationStats
from quant.metrics import SensitivityTable
from quant.plan import QuantPlan

_MB = 1e6


@dataclass
class _Layer:
    name: str
    weight_numel: int
    input_numel: int
    w_choices: list[int | None]  # high → low
    a_choices: list[int]  # high → low


def _weight_bytes(layer: _Layer, w: int | None) -> float:
    return math.ceil(layer.weight_numel * w / 8) if w is not None else 0.0


def _act_bytes(layer: _Layer, a: int) -> float:
    return layer.input_numel * a / 8


def greedy_allocate(
    stats: CalibrationStats,
    table: SensitivityTable,
    budget_mb: float,
    *,
    activation_budget_mb: float | None = None,
) -> QuantPlan:
    """A plan whose quantized weights fit `budget_mb`, with bits chosen by the sensitivity table."""
    missing = [n for n in stats.layers if n not in table.sqnr_db]
    if missing:
        raise QuantError(f"layer {missing[0]!r} has no sensitivity entry: measure the table on the same stats")
    layers = []
    for name in stats.layers:
        choices = table.choices(name)
        layers.append(
            _Layer(
                name=name,
                weight_numel=table.weight_numel[name],
                input_numel=table.input_numel[name],
                w_choices=sorted({w for w, _ in choices}, key=lambda w: -1 if w is None else w, reverse=True),
                a_choices=sorted({a for _, a in choices}, reverse=True),
            )
        )
    budgets = {"weight": budget_mb * _MB}
    if activation_budget_mb is not None:
        budgets["activation"] = activation_budget_mb * _MB

    def sizes(state: dict[str, tuple[int, int]]) -> dict[str, float]:
        out = {"weight": sum(_weight_bytes(lyr, lyr.w_choices[state[lyr.name][0]]) for lyr in layers)}
        if "activation" in budgets:
            out["activation"] = sum(_act_bytes(lyr, lyr.a_choices[state[lyr.name][1]]) for lyr in layers)
        return out

    def noise(lyr: _Layer, wi: int, ai: int) -> float:
        return table.noise(lyr.name, lyr.w_choices[wi], lyr.a_choices[ai])

    lowest = {lyr.name: (len(lyr.w_choices) - 1, len(lyr.a_choices) - 1) for lyr in layers}
    floor = sizes(lowest)
    for kind, limit in budgets.items():
        if floor[kind] > limit:
            lowest_bits = min(table.weight_bits) if kind == "weight" else min(table.act_bits)
            raise QuantError(
                f"{kind} budget {limit / _MB:.4g} MB cannot be met: the smallest reachable {kind} size, "
                f"with every layer at {lowest_bits} bits, is {floor[kind] / _MB:.4g} MB"
            )

    state = {lyr.name: (0, 0) for lyr in layers}

    def moves(direction: int) -> list[tuple[_Layer, tuple[int, int]]]:
        found = []
        for lyr in layers:
            wi, ai = state[lyr.name]
            for nwi, nai in ((wi + direction, ai), (wi, ai + direction)):
                if 0 <= nwi < len(lyr.w_choices) and 0 <= nai < len(lyr.a_choices):
                    found.append((lyr, (nwi, nai)))
        return found

    def byte_delta(lyr: _Layer, old: tuple[int, int], new: tuple[int, int]) -> dict[str, float]:
        delta = {"weight": _weight_bytes(lyr, lyr.w_choices[new[0]]) - _weight_bytes(lyr, lyr.w_choices[old[0]])}
        if "activation" in budgets:
            delta["activation"] = _act_bytes(lyr, lyr.a_choices[new[1]]) - _act_bytes(lyr, lyr.a_choices[old[1]])
        return delta

    # Step down until every budget holds: least added noise per (budget-normalised) byte saved.
    while True:
        current = sizes(state)
        violated = [k for k in budgets if current[k] > budgets[k]]
        if not violated:
            break
        best, best_score = None, math.inf
        for lyr, new in moves(+1):
            old = state[lyr.name]
            saved = sum(-byte_delta(lyr, old, new)[k] / budgets[k] for k in violated)
            if saved <= 0:
                continue
            score = (noise(lyr, *new) - noise(lyr, *old)) / saved
            if score < best_score:
                best, best_score = (lyr, new), score
        assert best is not None, "the floor check guarantees a step down exists"
        state[best[0].name] = best[1]

    # Spend what is left: most noise removed per byte, as long as every budget still holds.
    while True:
        current = sizes(state)
        best, best_score = None, 0.0
        for lyr, new in moves(-1):
            old = state[lyr.name]
            delta = byte_delta(lyr, old, new)
            if any(current[k] + delta[k] > budgets[k] for k in budgets):
                continue
            gain = noise(lyr, *old) - noise(lyr, *new)
            cost = sum(delta[k] / budgets[k] for k in budgets)
            score = gain / cost if cost > 0 else (math.inf if gain > 0 else 0.0)
            if score > best_score:
                best, best_score = (lyr, new), score
        if best is None:
            break
        state[best[0].name] = best[1]

    bits = {lyr.name: (lyr.w_choices[state[lyr.name][0]], lyr.a_choices[state[lyr.name][1]]) for lyr in layers}
    plan = stats.plan(bits=bits, method="greedy-mp")
    predicted = sum(noise(lyr, *state[lyr.name]) for lyr in layers)
    plan.metadata.update(
        {
            "budget_mb": budget_mb,
            "activation_budget_mb": activation_budget_mb,
            "predicted_sqnr_db": -10 * math.log10(predicted) if predicted > 0 else math.inf,
        }
    )
    return plan


def explain(table: SensitivityTable, plan: QuantPlan | None = None) -> Table:
    """The sensitivity table as a rich table (SQNR dB per candidate), with the plan's choice if given."""
    columns = [(w, a) for w in table.weight_bits for a in table.act_bits]
    if any(kind == "matmul" for kind in table.kinds.values()):
        columns += [(None, a) for a in table.act_bits]
    out = Table(title="output SQNR (dB) with one layer quantized", caption=None)
    out.add_column("layer")
    out.add_column("kind")
    out.add_column("weights", justify="right")
    for w, a in columns:
        out.add_column(f"W{w}A{a}" if w is not None else f"A{a}", justify="right")
    if plan is not None:
        out.add_column("chosen", justify="right")
        out.caption = f"plan: {plan.weight_bytes() / _MB:.4g} MB of quantized weights" + (
            f", budget {plan.metadata['budget_mb']:.4g} MB" if "budget_mb" in plan.metadata else ""
        )
    for name in table.layers:
        row = [name, table.kinds[name], f"{table.weight_numel[name]:,}"]
        row += [f"{table.sqnr_db[name][c]:.1f}" if c in table.sqnr_db[name] else "" for c in columns]
        if plan is not None:
            layer = plan.layers.get(name)
            if layer is None:
                row.append("")
            else:
                w = f"W{layer.weight_bits}" if layer.weight_bits is not None else ""
                row.append(f"{w}A{layer.act_bits}")
        out.add_row(*row)
    return out
