"""The latency-driven search with a real measured cost: each candidate (layer, width) timed on this CPU, the
greedy search held to a budget in milliseconds, and the plan's measured cost within it."""

from __future__ import annotations

import statistics
import time

import pytest
import torch
import torch.nn.functional as F

from converters.unit import DeployUnit
from edgevit.compress.probes import layer_inputs
from quant.errors import QuantError
from quant.fake_quant import collect_stats
from quant.groupwise import fake_quantize_weight
from quant.metrics import layer_sensitivity
from quant.mixed_precision import allocate, latency_budget
from quant.plan import LayerQuant
from tests.quant.tiny_vit import image_batches, make_tiny_vit


@pytest.fixture(scope="module")
def searched():
    torch.set_num_threads(1)
    model = make_tiny_vit()
    calib = image_batches(4, batch=4)
    stats = collect_stats(model, calib, progress=False).use_groups({4: 32}, "mse")
    table = layer_sensitivity(model, stats, calib[:1], weight_bits=(4, 6, 8), progress=False)
    unit = DeployUnit("model", model, (calib[0][:1],), ("image",), ("logits",))
    shapes = layer_inputs(model, unit, [n for n, s in stats.layers.items() if s.kind != "matmul"])
    measured: dict[tuple[str, int], float] = {}

    def cost(layer: LayerQuant) -> float:
        """Median ms of the layer's weight quantized on its grid and applied to its real input shape."""
        if layer.weight is None:
            return 0.0
        key = (layer.name, layer.weight.bits)
        if key not in measured:
            module = model.get_submodule(layer.name)
            x = torch.randn(shapes[layer.name])
            op = F.linear if layer.kind == "linear" else lambda x, w, b: module._conv_forward(x, w, b)
            times = []
            with torch.no_grad():
                for _ in range(15):
                    start = time.perf_counter()
                    op(x, fake_quantize_weight(module.weight, layer.weight), module.bias)
                    times.append(time.perf_counter() - start)
            measured[key] = statistics.median(times[3:]) * 1e3
        return measured[key]

    return stats, table, cost, measured


def test_latency_search_respects_a_measured_budget(searched) -> None:
    stats, table, cost, measured = searched
    fixed = 0.05  # ms no bit choice changes
    widest = {n: s.layer_quant(8 if s.kind != "matmul" else None, 8, "x") for n, s in stats.layers.items()}
    top = fixed + sum(cost(q) for q in widest.values())
    narrowest = {(n, w): cost(s.layer_quant(w, 8, "x")) for n, s in stats.layers.items() if s.kind != "matmul"
                 for w in (4, 6, 8)}  # fmt: skip
    floor = fixed + sum(min(v for (n2, _), v in narrowest.items() if n2 == n) for n in {n for n, _ in narrowest})
    assert floor < top
    budget = floor + 0.5 * (top - floor)
    plan = allocate(stats, table, [latency_budget(budget, cost, fixed)])
    used = fixed + sum(measured.get((n, lq.weight_bits), 0.0) for n, lq in plan.layers.items())
    (line,) = plan.metadata["allocation"]["budgets"]
    assert used == pytest.approx(line["used"]) and used <= budget
    assert any(lq.weight_bits != 8 for lq in plan.layers.values() if lq.weight is not None)
    # Every layer's width is one the search measured, and says why it got it.
    for name, got in plan.metadata["allocation"]["layers"].items():
        assert got["why"] and (got["weight_bits"] is None or (name, got["weight_bits"]) in measured)
    with pytest.raises(QuantError, match="latency budget .* cannot be met: the smallest reachable latency"):
        allocate(stats, table, [latency_budget(floor * 0.9, cost, fixed)])
