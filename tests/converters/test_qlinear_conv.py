"""ONNX int8 of a hybrid: every planned conv an onnxruntime QLinearConv, on the plan's output grids."""

from __future__ import annotations

import json

import torch

from converters import DeployUnit
from converters.quantized import MIN_SQNR_VS_REFERENCE_DB, convert_quantized
from converters.targets.onnx.runner import optimized_op_counts
from edgevit.pipeline.passes.quant_recipe import prepare, uniform_plan
from quant.plan import QuantPlan
from tests.quant.tiny_hybrid import image_batches, make_tiny_hybrid


def test_hybrid_convs_run_as_qlinear_convs(tmp_path) -> None:
    """Depthwise convs ran as ConvInteger (a reference kernel) and the others as patch GEMMs wrapped in layout ops:
    int8 MobileViT-XXS took 2.65x fp32's time. With output grids every conv is a QLinearConv, and the artifact
    still computes the plan's fake-quant model (output rounding and int32 bias included)."""
    torch.manual_seed(0)
    batches = [(x[i : i + 1],) for x in image_batches(2, batch=4, seed=1) for i in range(4)]
    prepared = prepare("ptq", make_tiny_hybrid(), batches[:6])
    plan = uniform_plan(prepared, 8, 8)
    convs = [name for name, lq in plan.layers.items() if lq.kind == "conv2d"]
    grouped = [name for name in convs if prepared.module.get_submodule(name).groups > 1]
    assert grouped and all(plan.layers[name].output is not None for name in convs)

    unit = DeployUnit("hybrid", prepared.module, batches[0], ("image",), ("logits",))
    art = convert_quantized(unit, "onnx", plan, tmp_path, parity_inputs=batches[6:])
    assert art.parity["logits"].sqnr_db >= MIN_SQNR_VS_REFERENCE_DB  # vs the fake-quant model with output grids
    kernels = optimized_op_counts(art.path)
    assert (kernels["QLinearConv"], kernels["ConvInteger"], kernels["Conv"]) == (len(convs), 0, 0)
    assert kernels["MatMulIntegerToFloat"] == 0  # no conv left as a patch GEMM

    # A plan written before output grids existed still loads, its convs without one.
    doc = json.loads(plan.to_json())
    for layer in doc["layers"]:
        del layer["output"]
    old = QuantPlan.from_json(json.dumps(doc))
    assert all(lq.output is None for lq in old.layers.values()) and old.layers.keys() == plan.layers.keys()
