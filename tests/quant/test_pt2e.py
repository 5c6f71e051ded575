from __future__ import annotations

from collections import Counter

import pytest
import torch

from quant.errors import QuantError
from quant.fake_quant import apply_plan, calibrate
from quant.metrics import model_outputs, outputs_sqnr
from quant.plan import QuantPlan
from quant.pt2e import quantize_pt2e
from quant.smoothquant import smooth_quant_
from tests.quant.tiny_vit import TinyViT, make_tiny_vit

_Q = torch.ops.quantized_decomposed


def _ops(graph: torch.fx.GraphModule) -> Counter:
    return Counter(n.target for n in graph.graph.nodes if n.op == "call_function")


def _agreement(model: TinyViT, plan: QuantPlan, graph: torch.fx.GraphModule, evalset: list) -> float:
    return outputs_sqnr(model_outputs(apply_plan(model, plan), evalset), model_outputs(graph, evalset))


def test_plan_mode_is_the_fake_quant_model(model: TinyViT, calib: list, evalset: list) -> None:
    plan = calibrate(model, calib, progress=False)
    graph = quantize_pt2e(model, (evalset[0],), plan)
    ops = _ops(graph)
    weighted = sum(lq.weight is not None for lq in plan.layers.values())
    assert ops[_Q.dequantize_per_channel.default] == weighted
    assert ops[_Q.quantize_per_tensor.default] == sum(len(lq.inputs) for lq in plan.layers.values())
    db = _agreement(model, plan, graph, evalset)
    print(f"PT2E (plan activations) vs fake-quant: {db:.1f} dB")
    assert db >= 35.0


def test_smoothed_and_4bit_plans_carry_over(calib: list, evalset: list) -> None:
    model = make_tiny_vit()
    smooth_quant_(model, calib, progress=False)  # LayerNorm folds and explicit SmoothedLinear pre-ops
    plan = calibrate(model, calib, weight_bits=4, progress=False)
    graph = quantize_pt2e(model, (evalset[0],), plan)
    ranges = {(n.args[4], n.args[5]) for n in graph.graph.nodes if n.target == _Q.dequantize_per_channel.default}
    assert ranges == {(-7, 7)}  # 4-bit levels held in int8 storage
    assert _agreement(model, plan, graph, evalset) >= 35.0


def test_dynamic_and_weight_only_modes(model: TinyViT, calib: list, evalset: list) -> None:
    plan = calibrate(model, calib, progress=False)
    with pytest.raises(QuantError, match="'blocks.0.attn.qk' multiplies two activations"):
        quantize_pt2e(model, (evalset[0],), plan, activations="dynamic")
    gemms = plan.subset([n for n, lq in plan.layers.items() if lq.kind != "matmul"])
    dynamic = _ops(quantize_pt2e(model, (evalset[0],), gemms, activations="dynamic"))
    assert dynamic[_Q.quantize_per_tensor.tensor] == len(gemms.layers)  # qparams computed per call
    assert dynamic[_Q.quantize_per_tensor.default] == 0
    weights = _ops(quantize_pt2e(model, (evalset[0],), gemms, activations="weights", fold_weights=False))
    assert weights[_Q.quantize_per_channel.default] == len(gemms.layers)
    assert weights[_Q.quantize_per_tensor.default] == weights[_Q.quantize_per_tensor.tensor] == 0


def test_plan_of_another_model_is_refused(model: TinyViT, calib: list, evalset: list) -> None:
    plan = calibrate(model, calib, progress=False)
    renamed = QuantPlan(layers={"encoder.fc": plan["head"]})
    with pytest.raises(QuantError, match="plan layer 'encoder.fc' has no linear op in the exported graph"):
        quantize_pt2e(model, (evalset[0],), renamed)
    wider = make_tiny_vit()
    wider.head = torch.nn.Linear(64, 12)
    with pytest.raises(QuantError, match="weight has 12 channels on axis 0 but the plan has 10 scales"):
        quantize_pt2e(wider, (evalset[0],), plan.subset(["head"]))
