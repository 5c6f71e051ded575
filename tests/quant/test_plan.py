from __future__ import annotations

import json

import pytest
import torch

from quant.errors import QuantError
from quant.fake_quant import apply_plan, calibrate, collect_stats
from quant.plan import QuantPlan, TensorQParams
from tests.quant.tiny_vit import TinyViT


def test_json_round_trip_is_exact(model: TinyViT, calib: list[torch.Tensor]) -> None:
    stats = collect_stats(model, calib, "mse", progress=False)
    plan = stats.plan(bits={"head": (4, 6), "blocks.0.attn.qk": (None, 6)})
    reloaded = QuantPlan.from_json(plan.to_json())
    assert reloaded == plan
    assert reloaded["head"].weight_bits == 4 and reloaded["head"].act_bits == 6
    x = calib[0]
    assert torch.equal(apply_plan(model, reloaded)(x), apply_plan(model, plan)(x))


def test_summary_counts_bits_and_bytes(model: TinyViT, calib: list[torch.Tensor]) -> None:
    stats = collect_stats(model, calib, progress=False)
    plan = stats.plan(bits={"head": (4, 8)})
    summary = plan.summary()
    params = sum(m.weight.numel() for n, m in model.named_modules() if n in plan.layers and hasattr(m, "weight"))
    assert summary["weight_params"] == params
    assert summary["weight_bytes_fp32"] == 4 * params
    assert summary["weight_bytes"] == params - 640 + 320  # head: 640 weights at 4 bits
    assert summary["weight_bits"] == {"4": 1, "8": 9}
    assert summary["activation_bits"] == {"8": 12}
    assert summary["kinds"] == {"conv2d": 1, "linear": 9, "matmul": 2}
    json.dumps(summary)


def test_schema_and_format_checked(model: TinyViT, calib: list[torch.Tensor]) -> None:
    doc = json.loads(calibrate(model, calib, progress=False).to_json())
    doc["schema_version"] = 99
    with pytest.raises(QuantError, match="schema version 99 is newer"):
        QuantPlan.from_json(json.dumps(doc))
    with pytest.raises(QuantError, match="not a quantization plan"):
        QuantPlan.from_json(json.dumps({"format": "something"}))


def test_zero_point_out_of_range_rejected() -> None:
    with pytest.raises(QuantError, match="outside"):
        TensorQParams(8, False, "per_tensor", [0.1], [200], -128, 127, "minmax")


def test_entries_build_pt2e_fixed_qparams_specs(model: TinyViT, calib: list[torch.Tensor]) -> None:
    quantizer = pytest.importorskip("torchao.quantization.pt2e.quantizer")
    plan = calibrate(model, calib, weight_bits=4, progress=False)
    act, weight = plan["blocks.0.attn.qkv"].inputs[0], plan["blocks.0.attn.qkv"].weight
    spec = quantizer.FixedQParamsQuantizationSpec(
        dtype=act.torch_dtype,
        scale=act.scale[0],
        zero_point=act.zero_point[0],
        quant_min=act.quant_min,
        quant_max=act.quant_max,
        qscheme=act.torch_qscheme,
    )
    assert (spec.dtype, spec.qscheme) == (torch.int8, torch.per_tensor_affine)
    assert (weight.torch_dtype, weight.torch_qscheme) == (torch.int8, torch.per_channel_symmetric)
    assert (weight.quant_min, weight.quant_max) == (-7, 7)
    scale, zero_point = weight.tensors()
    assert scale.dtype == torch.float32 and zero_point.shape == (192,)
