"""Uniform 8-bit plans scale the LayerNorm-fed Linears' inputs (AWQ): the outlier channels that set the per-tensor
8-bit input grid are divided, the fp32 model is unchanged and the records replay."""

from __future__ import annotations

from converters.unit import DeployUnit
from edgevit.pipeline import QuantConfig
from edgevit.pipeline.passes import PassData
from edgevit.pipeline.passes import quant_recipe as recipe
from edgevit.pipeline.passes.quant import plan_unit
from quant.fake_quant import apply_plan
from quant.metrics import model_outputs, outputs_sqnr
from quant.plan import QuantPlan
from quant.smoothquant import apply_smoothing_
from tests.quant.tiny_vit import image_batches, make_tiny_vit


def test_w8_plan_scales_layernorm_outliers_and_gains_held_out_sqnr() -> None:
    model = make_tiny_vit()  # LayerNorm gains ~20× on a few channels, as trained ViTs have
    calib, held = image_batches(8, seed=1), image_batches(4, seed=2)
    reference = model_outputs(model, held)
    unit = DeployUnit("model", model, (calib[0],), ("image",), ("logits",))
    lines: list = []
    planned, plan = plan_unit(unit, QuantConfig("ptq", "8"), calib, PassData(("onnx",), explain=lines.append))

    scaled = {n for n, layer in plan.layers.items() if layer.smoothing is not None}
    assert scaled and all(n.endswith(("qkv", "fc1")) for n in scaled)  # LayerNorm-fed only: nothing new to lower
    assert plan.metadata["awq"]["linears"] == len(scaled)
    assert f"AWQ input scaling on {len(scaled)} Linears" in lines
    for a, b in zip(reference, model_outputs(planned.module, held), strict=True):  # folded exactly
        assert (a - b).abs().max().item() <= 1e-4

    plain = recipe.prepare("ptq", model, calib)  # the same plan without AWQ
    without = outputs_sqnr(reference, model_outputs(apply_plan(plain.module, recipe.uniform_plan(plain, 8, 8)), held))
    with_awq = outputs_sqnr(reference, model_outputs(apply_plan(planned.module, plan), held))
    assert with_awq > without + 1.0, (without, with_awq)  # per-channel objective; the g32 one lost 0.5 dB here

    # The records replay from the written plan onto a fresh float model.
    reloaded = QuantPlan.from_json(plan.to_json())
    fresh = apply_smoothing_(make_tiny_vit(), {n: reloaded.layers[n].smoothing for n in scaled})
    for a, b in zip(model_outputs(planned.module, held), model_outputs(fresh, held), strict=True):
        assert (a - b).abs().max().item() <= 1e-5
