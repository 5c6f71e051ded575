"""ExecuTorch blockwise 4-bit: per-group Linear weights become XNNPACK qb4w GEMMs holding the plan's integers."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from converters import ConversionError, DeployUnit, load_runner
from converters.parity import sqnr_db
from converters.quantized import convert_quantized
from converters.targets.executorch.blockwise import held_blockwise_weights
from quant.fake_quant import calibrate
from quant.groupwise import fake_quantize_weight, groupwise_qparams, quantize_weight_ints
from quant.plan import QuantPlan
from tests.quant.tiny_vit import IMAGE, TinyViT, make_tiny_vit


def _images(count: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, IMAGE, IMAGE, generator=g) for _ in range(count)]


def _grouped(model: TinyViT, plan: QuantPlan, group_size: int) -> QuantPlan:
    """`plan` with every Linear weight 4-bit per group (MSE scales); the patch conv keeps its int8 grid."""
    layers = {
        name: dataclasses.replace(lq, weight=groupwise_qparams(model.get_submodule(name).weight, 4, group_size))
        if lq.kind == "linear"
        else lq
        for name, lq in plan.layers.items()
    }
    return dataclasses.replace(plan, layers=layers)


@pytest.fixture(scope="module")
def setup() -> tuple[TinyViT, DeployUnit, QuantPlan]:
    model = make_tiny_vit()
    unit = DeployUnit("tiny", model, tuple(_images(1, 3)), ("image",), ("logits",))
    return model, unit, calibrate(model, _images(8, 1), progress=False)


def test_blockwise_artifact_holds_qbint4_and_matches_the_plan(setup, tmp_path) -> None:
    model, unit, base = setup
    plan = _grouped(model, base, 32)
    held_out = [(x,) for x in _images(4, 7)]
    art = convert_quantized(unit, "executorch", plan, tmp_path, parity_inputs=held_out)
    quant = art.facts["quant"]
    linears = [n for n, lq in plan.layers.items() if lq.kind == "linear"]
    assert art.precision == "w4-8a8"
    # Read back from the written delegates: every Linear is a blockwise 4-bit GEMM, the patch conv int8.
    assert quant["xnnpack_gemms"]["linear"]["weights"] == {"qbint4": len(linears)}
    assert quant["xnnpack_gemms"]["conv"]["weights"] == {"qcint8": 1}
    assert quant["blockwise_int4_layers"] == len(linears) and quant["group_sizes"] == [32]
    # The file's integers are the plan's (unpacked from XNNPACK's nibbles here, independently of the lowering).
    held = sorted(tuple(ints.flatten().tolist()) for ints, _ in held_blockwise_weights(art.path))
    planned = sorted(
        tuple(quantize_weight_ints(model.get_submodule(n).weight, plan.layers[n].weight).flatten().tolist())
        for n in linears
    )
    assert held == planned
    assert 0 < quant["scale_bf16_max_rel_change"] < 2**-8
    # The runtime agrees with the plan's simulation: its weights dequantized, activations float.
    simulated = copy.deepcopy(model)
    with torch.no_grad():
        for n in linears:
            linear = simulated.get_submodule(n)
            linear.weight.copy_(fake_quantize_weight(linear.weight, plan.layers[n].weight))
    runner = load_runner("executorch", art.path, num_threads=1)
    got = np.concatenate([runner.run(x.numpy())[0].reshape(-1) for (x,) in held_out])
    want = torch.cat([simulated(x).reshape(-1) for (x,) in held_out]).detach().numpy()
    fp32 = torch.cat([model(x).reshape(-1) for (x,) in held_out]).detach().numpy()
    print(f"executorch qb4w: {sqnr_db(want, got):.1f} dB vs the plan's weights, {sqnr_db(fp32, got):.1f} dB vs fp32")
    assert sqnr_db(want, got) > 30.0
    assert sqnr_db(want, got) > sqnr_db(fp32, got) + 3.0  # closer to the plan than to fp32: the plan's levels ran


def test_group_sizes_xnnpack_refuses_are_refused_before_writing(setup, tmp_path) -> None:
    model, unit, base = setup
    with pytest.raises(ConversionError, match="groups of 16: XNNPACK needs a multiple of 32"):
        convert_quantized(unit, "executorch", _grouped(model, base, 16), tmp_path)
    assert not list(tmp_path.iterdir())
