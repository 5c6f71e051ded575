"""The latency search's cost model and floor on given timings: the anchor fit reproduces the whole-unit anchors
the bare probes mispredict, and the floor takes the highest widths (W8A8) when they meet the budget or when the
searched plan measures no faster; with float as a width, the room a budget leaves above W8A8 keeps the most
sensitive layers float. Arithmetic on stated numbers, but for one real ExecuTorch lowering of a plan that keeps a
layer float."""

from __future__ import annotations

import io
import json

import pytest
import torch
from rich.console import Console

from converters.unit import DeployUnit
from edgevit.compress.bitsearch import TOP, MeasuredCost
from edgevit.compress.latency_fit import Anchor, fit_costs, floor_reason
from edgevit.compress.latency_search import retighten, search, settle
from quant.errors import QuantError
from quant.fake_quant import collect_stats
from quant.metrics import layer_sensitivity
from quant.mixed_precision import allocate, explain, latency_budget
from tests.quant.tiny_vit import image_batches, make_tiny_vit

FIXED = 0.1  # ms of the unit no bit choice changes, in the synthetic "device"
FLOAT_MS = 0.1  # ms a layer left float adds in the unit, by default (8-bit: 0.04)


def test_fit_reproduces_anchors_and_falls_back_to_the_probes() -> None:
    # Two groups (a: 3 identical layers, b: 2). In context 4-bit costs more than 8-bit; the isolated probes say less.
    truth = {"a8": 1.0, "a4": 1.6, "b8": 2.0, "b4": 2.6}
    probes = {"a8": 1.0, "a4": 0.5, "b8": 2.0, "b4": 1.0}

    def anchor(name: str, counts: dict[str, int]) -> Anchor:
        return Anchor(name, counts, 5.0 + sum(n * truth[k] for k, n in counts.items()))

    top = anchor("top", {"a8": 3, "b8": 2})
    all4 = anchor("all4", {"a4": 3, "b4": 2})
    flips = [anchor("a", {"a4": 3, "b8": 2}), anchor("b", {"a8": 3, "b4": 2})]

    def predict(costs: dict[str, float], fixed: float, counts: dict[str, int]) -> float:
        return fixed + sum(n * costs[k] for k, n in counts.items())

    # The top anchor alone: the bare probes, the rest of the unit as the fixed part (stop 17's model).
    costs, fixed = fit_costs(probes, [top])
    assert costs == pytest.approx(probes) and fixed == pytest.approx(5.0)
    # Group flips: every anchor reproduced, and so is any mixed plan of an additive unit (one a and one b at 4).
    costs, fixed = fit_costs(probes, [top, all4, *flips])
    for a in (top, all4, *flips):
        assert predict(costs, fixed, a.counts) == pytest.approx(a.measured_ms)
    mixed = {"a4": 1, "a8": 2, "b4": 1, "b8": 1}
    assert predict(costs, fixed, mixed) == pytest.approx(predict(truth, 5.0, mixed))
    assert predict(probes, 5.0, mixed) < top.measured_ms < predict(costs, fixed, mixed)  # bare probes: wrong sign
    # Top and all-4 alone: both reproduced, the gap shared as the same per-layer change (a per-width offset).
    costs, fixed = fit_costs(probes, [top, all4])
    assert predict(costs, fixed, all4.counts) == pytest.approx(all4.measured_ms)
    assert predict(costs, fixed, top.counts) == pytest.approx(top.measured_ms)
    flip_a, flip_b = costs["a4"] - costs["a8"], costs["b4"] - costs["b8"]
    assert flip_a - (probes["a4"] - probes["a8"]) == pytest.approx(flip_b - (probes["b4"] - probes["b8"]))
    # Anchors that disagree (the flips do not add up to all-4, as under load): the highest widths stay where they
    # were measured (the floor's reference), the other anchors share the misfit.
    skewed = Anchor("all4", all4.counts, all4.measured_ms - 1.0)
    costs, fixed = fit_costs(probes, [top, skewed, *flips])
    assert predict(costs, fixed, top.counts) == pytest.approx(top.measured_ms, abs=1e-3)
    misfit = [predict(costs, fixed, a.counts) - a.measured_ms for a in (skewed, *flips)]
    assert 0 < max(abs(e) for e in misfit) < 0.9


def test_floor_reason() -> None:
    assert "within the 5 ms budget" in floor_reason(None, 4.0, 5.0)
    assert "within" in floor_reason(6.0, 5.0, 5.0)  # W8A8 meets the budget: taken whatever the search measured
    assert "no faster than the highest widths' 5 ms" in floor_reason(5.0, 5.0, 4.0)  # a tie goes to W8A8
    assert floor_reason(4.5, 5.0, 4.0) is None  # faster than W8A8 (if over budget): kept
    # A plan keeping layers float spends the room W8A8 leaves: kept within its budget, even slower than W8A8 ...
    assert floor_reason(None, 4.0, 5.0, floats=2) is None and floor_reason(4.8, 4.0, 5.0, floats=2) is None
    # ... and W8A8 taken when it measured over the budget W8A8 meets (or over the budget and no faster).
    assert "keeps 2 layer(s) float and measured 5.2 ms, over the 5 ms" in floor_reason(5.2, 4.0, 5.0, floats=2)
    assert "over the" in floor_reason(6.0, 5.5, 5.0, floats=1) and floor_reason(5.2, 5.5, 5.0, floats=1) is None


@pytest.fixture(scope="module")
def tiny() -> tuple:
    torch.set_num_threads(1)
    model = make_tiny_vit()
    calib = image_batches(4, batch=2)
    stats = collect_stats(model, calib, progress=False)
    table = layer_sensitivity(model, stats, calib[:1], weight_bits=(4, 8), progress=False)
    unit = DeployUnit("model", model, (calib[0][:1],), ("image",), ("logits",))
    return unit, stats, table


def _cost(tiny: tuple, in_context: dict[str, float], floats: bool = False) -> MeasuredCost:
    """A MeasuredCost on given timings: every isolated probe says 4-bit is half the 8-bit time (0.02 vs 0.04 ms
    after a 0.01 ms idle call), float the 8-bit time; in the unit a layer at w bits costs `in_context` (by the
    layer's last name part and width, e.g. "fc1@4"), 0.04 ms by default, left float FLOAT_MS, plus FIXED."""
    unit, stats, table = tiny
    weighted = [n for n, s in stats.layers.items() if s.kind != "matmul"]

    def timings(cost: MeasuredCost) -> dict[str, float]:
        ms = {key: 0.01 + (0.02 if json.loads(key)[3] == 4 else 0.04) for key in cost.probes}
        for name, plan in cost.plans.items():
            layers = [(n.rsplit(".", 1)[-1], lq.weight_bits) for n, lq in plan.layers.items() if lq.weight]
            floated = [n.rsplit(".", 1)[-1] for n in weighted if n not in plan.layers]
            ms[name] = FIXED + sum(in_context.get(f"{n}@{w}", 0.04) for n, w in layers)
            ms[name] += sum(in_context.get(f"{n}@float", FLOAT_MS) for n in floated)
        return {**ms, "idle": 0.01}

    return MeasuredCost(unit, stats, table, "executorch", "local", timings=timings, floats=floats)


def test_anchors_correct_the_probes_and_the_floor_takes_w8a8_when_4_bit_is_slower(tiny) -> None:
    _, _, table = tiny
    cost = _cost(tiny, {f"{n}@4": 0.07 for n in ("proj", "qkv", "fc1", "fc2", "head")})  # every 4-bit is slower
    assert len(cost.plans) > 2  # highest widths, all at 4 bits, group flips
    record = cost.record()
    for a in record["anchors"]:
        assert a["fitted_ms"] == pytest.approx(a["measured_ms"])
    all4 = next(a for a in record["anchors"] if a["plan"] == "all W4")
    assert all4["bare_probes_ms"] < cost.top_ms < all4["measured_ms"]
    # Every 4-bit width is slower: no budget under W8A8 can be met, and one at or above it is met by W8A8 itself.
    with pytest.raises(QuantError, match="latency budget .* cannot be met"):
        search(cost, table, cost.top_ms * 0.95)
    plan = search(cost, table, cost.predict(cost.plans["all W4"]))
    lat = plan.metadata["latency"]
    assert {lq.weight_bits for lq in plan.layers.values() if lq.weight} == {8}
    assert "within" in lat["floor"] and lat["predicted_ms"] == pytest.approx(cost.top_ms)
    assert lat["anchors"] == record["anchors"]
    plan = settle(plan, cost.top_ms, cost, table, cost.top_ms)
    assert plan.metadata["latency"]["measured_within_budget"]


def test_floor_takes_w8a8_when_the_searched_plan_measures_slower(tiny) -> None:
    _, _, table = tiny
    cost = _cost(tiny, {"fc1@4": 0.01, "fc2@4": 0.01})  # the MLP at 4 bits is faster in the unit, the rest is not
    budget = cost.top_ms - 0.05
    plan = search(cost, table, budget)
    assert {n.rsplit(".", 1)[-1] for n, lq in plan.layers.items() if lq.weight_bits == 4} <= {"fc1", "fc2"}
    assert plan.metadata["latency"]["floor"] is None and plan.metadata["latency"]["predicted_ms"] <= budget
    kept = settle(plan, budget - 0.01, cost, table, cost.top_ms)  # the artifact measured what was predicted
    assert kept is plan and kept.metadata["latency"]["measured_within_budget"]
    slower = search(cost, table, budget)
    taken = settle(slower, cost.top_ms + 0.01, cost, table, cost.top_ms)  # the artifact measured slower than W8A8
    lat = taken.metadata["latency"]
    assert {lq.weight_bits for lq in taken.layers.values() if lq.weight} == {8}
    assert "no faster than the highest widths'" in lat["floor"] and lat["measured_ms"] == cost.top_ms
    assert lat["searched_measured_ms"] == cost.top_ms + 0.01 and lat["searched_predicted_ms"] <= budget
    assert not lat["measured_within_budget"]
    assert all("floor" in got["why"] for got in taken.metadata["allocation"]["layers"].values())
    assert TOP in {a["plan"] for a in lat["anchors"]}


def test_the_room_above_w8a8_keeps_the_most_sensitive_layer_float(tiny) -> None:
    _, stats, table = tiny
    cost = _cost(tiny, {f"{n}@4": 0.07 for n in ("proj", "qkv", "fc1", "fc2", "head")}, floats=True)
    assert {"all W4", "all float", "head ×1 at float"} <= set(cost.plans)
    for a in cost.record()["anchors"]:
        assert a["fitted_ms"] == pytest.approx(a["measured_ms"])
    weighted = [n for n, s in stats.layers.items() if s.kind != "matmul"]
    worst = max(weighted, key=lambda n: table.noise(n, 8, 8))
    # Room for one layer float (+0.06 ms over W8A8), not two: the one whose W8A8 noise is largest.
    plan = search(cost, table, cost.top_ms + 0.07)
    lat, allocation = plan.metadata["latency"], plan.metadata["allocation"]
    assert lat["floor"] is None and lat["float_layers"] == allocation["float_layers"] == [worst]
    assert worst not in plan.layers and set(plan.layers) == set(stats.layers) - {worst}
    assert lat["predicted_ms"] == pytest.approx(cost.top_ms + FLOAT_MS - 0.04)
    assert allocation["layers"][worst]["float"] and "stays float" in allocation["layers"][worst]["why"]
    assert plan.summary()["float_layers"] == 1  # the manifest's digest counts what the plan leaves out
    console = Console(file=io.StringIO(), width=400)
    console.print(explain(table, plan))
    assert f"stays float (left out of the plan): {worst}" in console.file.getvalue()
    # Kept when it measures within the budget, slower than W8A8 as it is meant to be; over it, W8A8 is taken.
    assert settle(plan, cost.top_ms + 0.065, cost, table, cost.top_ms) is plan
    over = settle(search(cost, table, cost.top_ms + 0.07), cost.top_ms + 0.08, cost, table, cost.top_ms)
    assert "over the" in over.metadata["latency"]["floor"] and set(over.layers) == set(stats.layers)
    assert over.metadata["latency"]["searched_float_layers"] == [worst]
    # Benched at twice the load of the anchors (W8A8 twice as slow beside it): the budget is judged at that load.
    slow = settle(search(cost, table, cost.top_ms + 0.07), 2 * (cost.top_ms + 0.065), cost, table, 2 * cost.top_ms)
    assert slow.metadata["latency"]["floor"] is None and slow.metadata["latency"]["load_drift"] == pytest.approx(2)
    # No room above W8A8: W8A8, the floor saying why.
    top = search(cost, table, cost.top_ms + 0.01)
    assert "within" in top.metadata["latency"]["floor"] and set(top.layers) == set(stats.layers)


def test_a_float_plan_measured_over_budget_is_searched_again_under_the_overshoot(tiny) -> None:
    _, stats, table = tiny
    cost = _cost(tiny, {f"{n}@4": 0.07 for n in ("proj", "qkv", "fc1", "fc2", "head")}, floats=True)
    budget = cost.top_ms + 0.13  # room for two float layers (+0.06 each over W8A8)
    first = search(cost, table, budget)
    assert len(first.metadata["latency"]["float_layers"]) == 2
    assert retighten(first, budget, cost, table, cost.top_ms) is None  # within its budget: nothing to retry
    # Measured 0.02 ms over (the fitted costs under-predicted): searched under the budget shrunk by that overshoot,
    # which holds one float layer (the most sensitive), and judged against the budget first asked.
    retry = retighten(first, budget + 0.02, cost, table, cost.top_ms)
    worst = max((n for n, s in stats.layers.items() if s.kind != "matmul"), key=lambda n: table.noise(n, 8, 8))
    assert retry is not None and retry.metadata["latency"]["float_layers"] == [worst]
    again = retry.metadata["latency"]["retightened"]
    assert retry.metadata["latency"]["budget_ms"] == budget and again["searched_under_ms"] < budget
    assert again["first_float_layers"] == first.metadata["latency"]["float_layers"]
    assert settle(retry, cost.top_ms + 0.06, cost, table, cost.top_ms).metadata["latency"]["floor"] is None
    # Benched at twice the anchors' load (W8A8 twice as slow beside it), twice the budget is within it.
    assert retighten(first, 2 * budget, cost, table, 2 * cost.top_ms) is None


def test_a_plan_keeping_a_layer_float_lowers_for_executorch_and_passes_its_parity_gate(tmp_path) -> None:
    # Two Linears, not the tiny ViT: one ExecuTorch lowering of the ViT takes ~25 s here, this one ~5.
    from converters.quantized import convert_quantized

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 16)).eval()
    calib = [torch.randn(4, 8, 16) for _ in range(4)]
    calib[0][..., 3] *= 30  # an outlier channel: the first Linear is the sensitive one at 8 bits
    stats = collect_stats(model, calib, progress=False)
    table = layer_sensitivity(model, stats, calib[:1], weight_bits=(8,), progress=False)
    worst = max(stats.layers, key=lambda n: table.noise(n, 8, 8))
    # 1 ms a layer at 8 bits, 2 ms left float, a 3 ms budget: room for one float layer.
    plan = allocate(stats, table, [latency_budget(3.0, lambda _lq: 1.0, 0.0, lambda _name: 2.0)])
    assert plan.metadata["allocation"]["float_layers"] == [worst] and worst not in plan.layers
    unit = DeployUnit("model", model, (calib[1][:1],), ("x",), ("y",))
    artifact = convert_quantized(unit, "executorch", plan, tmp_path, parity_inputs=[(b[:1],) for b in calib[1:]])
    assert artifact.path.exists() and artifact.parity is not None
    assert artifact.facts["quant"]["parity_vs_fp32"]["y"]["sqnr_db"] > 30
