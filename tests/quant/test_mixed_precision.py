from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console

from quant.errors import QuantError
from quant.fake_quant import CalibrationStats, apply_plan, collect_stats
from quant.metrics import SensitivityTable, layer_sensitivity, model_outputs, outputs_sqnr
from quant.mixed_precision import allocate, explain, greedy_allocate, latency_budget
from tests.quant.tiny_vit import TinyViT, image_batches, make_tiny_vit


@pytest.fixture(scope="module")
def setup(calib: list[torch.Tensor], evalset: list[torch.Tensor]) -> tuple[TinyViT, CalibrationStats, SensitivityTable]:
    model = make_tiny_vit()
    stats = collect_stats(model, calib, progress=False)
    table = layer_sensitivity(model, stats, evalset, weight_bits=(4, 5, 6, 8), act_bits=(4, 6, 8), progress=False)
    return model, stats, table


@pytest.fixture(scope="module")
def heldout() -> list[torch.Tensor]:
    return image_batches(4, seed=3)  # not the batches the sensitivity table was measured on


def test_table_orders_bits(setup: tuple) -> None:
    _, _, table = setup
    for name in table.layers:
        if table.kinds[name] != "matmul":
            assert table.sqnr_db[name][(4, 8)] < table.sqnr_db[name][(8, 8)]
        assert table.sqnr_db[name][(None if table.kinds[name] == "matmul" else 8, 6)] < 60


def test_meets_budget_and_beats_uniform_at_same_size(setup: tuple, heldout: list[torch.Tensor]) -> None:
    model, stats, table = setup
    reference = model_outputs(model, heldout)
    uniform = stats.plan(weight_bits=5, act_bits=8)
    budget_mb = uniform.weight_bytes() / 1e6
    mixed = greedy_allocate(stats, table, budget_mb)
    assert mixed.weight_bytes() <= uniform.weight_bytes()
    assert set(mixed.summary()["activation_bits"]) == {"8"}
    uniform_db = outputs_sqnr(reference, model_outputs(apply_plan(model, uniform), heldout))
    mixed_db = outputs_sqnr(reference, model_outputs(apply_plan(model, mixed), heldout))
    print(
        f"at {budget_mb * 1e3:.1f} kB: uniform W5A8 {uniform_db:.1f} dB, greedy MP {mixed_db:.1f} dB "
        f"(predicted {mixed.metadata['predicted_sqnr_db']:.1f}), bits {mixed.summary()['weight_bits']}"
    )
    assert mixed_db > uniform_db + 3.0
    assert all(layer.method == "greedy-mp" for layer in mixed.layers.values())


def test_activation_budget_lowers_activation_bits(setup: tuple, heldout: list[torch.Tensor]) -> None:
    model, stats, table = setup
    reference = model_outputs(model, heldout)
    uniform = stats.plan(weight_bits=8, act_bits=6)
    act_mb = sum(s.input_numel for s in stats.layers.values()) * 6 / 8 / 1e6
    mixed = greedy_allocate(stats, table, uniform.weight_bytes() / 1e6, activation_budget_mb=act_mb)
    act_bytes = sum(s.input_numel * mixed[n].act_bits / 8 for n, s in stats.layers.items())
    assert act_bytes <= act_mb * 1e6
    uniform_db = outputs_sqnr(reference, model_outputs(apply_plan(model, uniform), heldout))
    mixed_db = outputs_sqnr(reference, model_outputs(apply_plan(model, mixed), heldout))
    print(f"activation budget: uniform W8A6 {uniform_db:.1f} dB, greedy MP {mixed_db:.1f} dB")
    assert mixed_db > uniform_db


def test_impossible_budget_names_smallest_reachable(setup: tuple) -> None:
    _, stats, table = setup
    floor_mb = stats.plan(weight_bits=4).weight_bytes() / 1e6
    with pytest.raises(QuantError, match=f"smallest reachable weight size.*4 bits, is {floor_mb:.4g} MB"):
        greedy_allocate(stats, table, floor_mb * 0.9)


def test_explain_renders_every_layer(setup: tuple) -> None:
    _, stats, table = setup
    plan = greedy_allocate(stats, table, stats.plan(weight_bits=6).weight_bytes() / 1e6)
    out = io.StringIO()
    Console(file=out, width=200).print(explain(table, plan))
    text = out.getvalue()
    assert all(name in text for name in table.layers)
    assert "W4A8" in text and "A6" in text and "budget" in text


def test_float_is_a_candidate_only_under_a_budget_that_prices_it(setup: tuple) -> None:
    _, stats, table = setup
    fp32_mb = 4 * sum(table.weight_numel.values()) / 1e6
    by_bytes = greedy_allocate(stats, table, 10 * fp32_mb)  # room for every weight in fp32: still never float
    assert set(by_bytes.layers) == set(stats.layers) and by_bytes.metadata["allocation"]["float_layers"] == []
    assert all(not got["float"] for got in by_bytes.metadata["allocation"]["layers"].values())

    def float_ms(name: str) -> float | None:
        return None if stats.layers[name].kind == "matmul" else 1.0  # matmuls not measured float: not candidates

    # Float as cheap as 8 bits under a latency budget: no noise for nothing, so every priced layer stays float.
    by_ms = allocate(stats, table, [latency_budget(100.0, lambda _lq: 1.0, 0.0, float_ms)])
    floated = [n for n, s in stats.layers.items() if s.kind != "matmul"]
    assert by_ms.metadata["allocation"]["float_layers"] == floated and set(by_ms.layers).isdisjoint(floated)
