"""The quant pass plans uniform 4-bit weights on AWQ-scaled inputs where its targets lower group-wise 4-bit."""

from __future__ import annotations

from converters.unit import DeployUnit
from edgevit.pipeline import QuantConfig
from edgevit.pipeline.passes import PassData
from edgevit.pipeline.passes.quant import plan_unit
from quant.groupwise import fake_quantize_weight
from quant.metrics import model_outputs
from tests.quant.tiny_vit import image_batches, make_tiny_vit


def test_w4_plan_scales_inputs_and_keeps_the_fp32_model() -> None:
    model = make_tiny_vit()
    calib, held = image_batches(6, seed=1), image_batches(2, seed=2)
    unit = DeployUnit("model", model, (calib[0],), ("image",), ("logits",))
    planned, plan = plan_unit(unit, QuantConfig("ptq", "4"), calib, PassData(("executorch",)))

    assert "AWQ input scaling" in plan.metadata["four_bit_grid"]
    scaled = {n for n, layer in plan.layers.items() if layer.smoothing is not None}
    assert scaled and all(n.endswith(("qkv", "fc1")) for n in scaled)  # LayerNorm-fed only: nothing new to lower
    # Folded exactly: the module the targets lower computes what the float model does.
    for a, b in zip(model_outputs(model, held), model_outputs(planned.module, held), strict=True):
        assert (a - b).abs().max().item() <= 1e-4
    # The plan's groups were searched on the scaled weights: they round those, not the originals, to the grid.
    name = sorted(scaled)[0]
    weight = planned.module.get_submodule(name).weight.detach()
    q = plan.layers[name].weight
    assert q is not None and q.granularity == "per_group"
    err_scaled = (fake_quantize_weight(weight, q) - weight).pow(2).mean()
    original = model.get_submodule(name).weight.detach()
    assert err_scaled < (fake_quantize_weight(original, q) - original).pow(2).mean()
