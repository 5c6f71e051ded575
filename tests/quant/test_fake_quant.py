from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from quant.errors import QuantError
from quant.fake_quant import (
    FakeQuantLayer,
    apply_plan,
    calibrate,
    collect_stats,
    quantizable_layers,
    strip_fake_quant,
)
from quant.metrics import model_outputs, outputs_sqnr, sqnr, top1_agreement
from tests.quant.tiny_vit import TinyViT


def test_quantizable_layers_expose_explicit_matmuls_only(model: TinyViT) -> None:
    kinds = quantizable_layers(model)
    assert kinds["patch_embed"] == "conv2d"
    assert kinds["blocks.0.attn.qk"] == kinds["blocks.0.attn.av"] == "matmul"
    assert not any(name.startswith("blocks.1.attn.") and k == "matmul" for name, k in kinds.items())
    assert "blocks.0.norm1" not in kinds  # LayerNorm stays float


def test_symmetric_activation_grids_take_the_full_range_weights_stay_restricted(
    model: TinyViT, calib: list[torch.Tensor]
) -> None:
    """Runtimes saturate an int8 activation at -128/127: a ±127 activation grid would clip one level apart."""
    plan = collect_stats(model, calib, act_symmetric=True, progress=False).plan(8, 8)
    qkv = plan.layers["blocks.0.attn.qkv"]
    assert qkv.inputs[0].symmetric and (qkv.inputs[0].quant_min, qkv.inputs[0].quant_max) == (-128, 127)
    assert qkv.inputs[0].zero_point == [0]
    assert qkv.weight is not None and (qkv.weight.quant_min, qkv.weight.quant_max) == (-127, 127)


def test_calibrate_fills_default_granularities(model: TinyViT, calib: list[torch.Tensor]) -> None:
    plan = calibrate(model, calib, progress=False)
    qkv = plan["blocks.0.attn.qkv"]
    assert qkv.weight is not None
    assert (qkv.weight.granularity, qkv.weight.symmetric, qkv.weight.ch_axis) == ("per_channel", True, 0)
    assert len(qkv.weight.scale) == 3 * 64
    assert (qkv.inputs[0].granularity, qkv.inputs[0].symmetric) == ("per_tensor", False)
    assert len(plan["blocks.0.attn.qk"].inputs) == 2 and plan["blocks.0.attn.qk"].weight is None
    assert list(plan.layers)[0] == "patch_embed"  # execution order
    assert plan.metadata["calibration_batches"] == 8


def test_w8a8_close_but_not_identical(model: TinyViT, calib: list[torch.Tensor], evalset: list) -> None:
    reference = model_outputs(model, evalset)
    w8a8 = apply_plan(model, calibrate(model, calib, progress=False))
    w4a8 = apply_plan(model, calibrate(model, calib, weight_bits=4, progress=False))
    s8 = outputs_sqnr(reference, model_outputs(w8a8, evalset))
    s4 = outputs_sqnr(reference, model_outputs(w4a8, evalset))
    print(f"fake-quant SQNR vs fp32: W8A8 {s8:.1f} dB, W4A8 {s4:.1f} dB")
    assert 25.0 < s8 < math.inf
    assert s4 < s8 - 10.0
    assert top1_agreement(torch.cat(reference), torch.cat(model_outputs(w8a8, evalset))) >= 0.85
    # The float model is untouched: apply_plan works on a copy.
    assert not any(isinstance(m, FakeQuantLayer) for m in model.modules())
    assert outputs_sqnr(reference, model_outputs(model, evalset)) == math.inf


def test_apply_then_strip_in_place_restores(model: TinyViT, calib: list[torch.Tensor]) -> None:
    plan = calibrate(model, calib, progress=False)
    x = calib[0]
    before = model(x)
    apply_plan(model, plan, inplace=True)
    assert isinstance(model.blocks[0].attn.qk, FakeQuantLayer)
    assert sqnr(before, model(x)) < math.inf
    strip_fake_quant(model)
    assert torch.equal(model(x), before)


def test_too_few_batches_says_how_many(model: TinyViT, calib: list[torch.Tensor]) -> None:
    with pytest.raises(QuantError, match="got 2 batch.*at least 4"):
        calibrate(model, calib[:2], progress=False)


def test_multihead_attention_is_refused_by_name() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.MultiheadAttention(8, 2))
    with pytest.raises(QuantError, match="layer '1' is nn.MultiheadAttention"):
        quantizable_layers(model)


def test_unquantizable_layer_named(model: TinyViT, calib: list[torch.Tensor]) -> None:
    with pytest.raises(QuantError, match="'blocks.0.norm1' cannot be quantized: it is LayerNorm"):
        collect_stats(model, calib, layers=["blocks.0.norm1"], progress=False)


def test_plan_for_other_model_rejected(model: TinyViT, calib: list[torch.Tensor]) -> None:
    plan = calibrate(model, calib, progress=False)
    with pytest.raises(QuantError, match="'patch_embed' does not exist"):
        apply_plan(nn.Sequential(nn.Linear(4, 4)), plan)
