"""Quantized artifacts from a plan: each runs in its runtime, agrees with the fake-quant model, is smaller."""

from __future__ import annotations

import pytest
import torch

from converters import ConversionError, DeployUnit, convert, load_runner
from converters.quantized import MIN_SQNR_VS_REFERENCE_DB, convert_quantized
from quant.fake_quant import calibrate
from quant.plan import QuantPlan
from tests.quant.tiny_vit import IMAGE, TinyViT, make_tiny_vit


def _images(count: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, IMAGE, IMAGE, generator=g) for _ in range(count)]


@pytest.fixture(scope="module")
def model() -> TinyViT:
    torch.set_num_threads(1)
    return make_tiny_vit()


@pytest.fixture(scope="module")
def unit(model: TinyViT) -> DeployUnit:
    return DeployUnit("tiny", model, tuple(_images(1, 3)), ("image",), ("logits",))


@pytest.fixture(scope="module")
def held_out() -> list[tuple[torch.Tensor, ...]]:
    return [(x,) for x in _images(4, 7)]


@pytest.fixture(scope="module")
def plan(model: TinyViT) -> QuantPlan:
    return calibrate(model, _images(8, 1), progress=False)


@pytest.mark.parametrize("target", ["onnx", "executorch", "tflite"])
def test_int8_artifact_runs_agrees_and_shrinks(target, unit, plan, held_out, tmp_path) -> None:
    art = convert_quantized(unit, target, plan, tmp_path, parity_inputs=held_out)
    quant = art.facts["quant"]
    vs_ref, vs_fake, vs_fp32 = (
        quant[f"parity_vs_{k}"]["logits"]["sqnr_db"] for k in ("reference", "fake_quant", "fp32")
    )
    print(f"{target}: {art.size_bytes} B, dB vs reference {vs_ref:.1f}, fake-quant {vs_fake:.1f}, fp32 {vs_fp32:.1f}")
    assert art.precision == "int8" and art.path == tmp_path / f"tiny.int8{art.path.suffix}"
    assert art.parity["logits"].sqnr_db == vs_ref >= 30.0 and art.min_sqnr_db == MIN_SQNR_VS_REFERENCE_DB
    fp32 = convert(unit, target, "fp32", tmp_path / "fp32")
    assert art.size_bytes < 0.6 * fp32.size_bytes
    out = load_runner(target, art.path, num_threads=1).run(held_out[0][0].numpy())
    assert out[0].shape == (1, 10) and out[0].dtype == "float32"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([art.path.name, "fp32"])  # no temp file left

    gemms = [n for n, lq in plan.layers.items() if lq.kind != "matmul"]
    if target == "onnx":
        assert vs_ref == vs_fake >= 40.0  # the plan's own qparams, run by integer kernels
        assert quant["ort_int8_kernels"]["QGemm"] == sum(lq.kind == "linear" for lq in plan.layers.values())
    elif target == "executorch":
        assert quant["int8_layers"] == len(gemms)
        assert not {"aten_linear_default", "aten_convolution_default"} & set(art.facts["undelegated_ops"])
        assert not any("quantize" in op for op in art.facts["undelegated_ops"])
        assert vs_fp32 > vs_fake  # dynamic activations: closer to fp32 than the plan's static grids
    else:
        assert quant["weight_dtypes_held"] == {"FULLY_CONNECTED": {"int8": len(gemms) - 1}, "CONV_2D": {"int8": 1}}


def test_coreml_holds_int8_and_int4_weights(unit, model, tmp_path) -> None:
    images = _images(8, 1)
    w8 = convert_quantized(unit, "coreml", calibrate(model, images, progress=False), tmp_path)
    assert w8.precision == "int8" and w8.parity is None and "macOS" in w8.parity_note
    assert w8.facts["quant"]["weight_bits_held"] == {"conv": {"int8": 1}, "linear": {"int8": 9}}
    assert w8.facts["minimum_deployment_target"] == "iOS17"
    stats_plan = calibrate(model, images, weight_bits=4, progress=False)
    w4 = convert_quantized(unit, "coreml", stats_plan, tmp_path)
    assert w4.precision == "int4-weights" and w4.facts["minimum_deployment_target"] == "iOS18"
    assert w4.facts["quant"]["weight_bits_held"] == {"conv": {"int4": 1}, "linear": {"int4": 9}}
    assert w4.size_bytes < 0.7 * w8.size_bytes


def test_bits_a_target_cannot_hold_are_refused(unit, model, tmp_path) -> None:
    w4 = calibrate(model, _images(8, 1), weight_bits=4, progress=False)
    with pytest.raises(ConversionError, match=r"onnx holds 8-bit weights .* the plan has 4-bit weights in 10 layer"):
        convert_quantized(unit, "onnx", w4, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_parity_gate_leaves_no_file(unit, plan, held_out, tmp_path) -> None:
    with pytest.raises(
        ConversionError, match=r"'logits' is .* dB from its reference \(the plan's fake-quant .*< 200 dB"
    ):
        convert_quantized(unit, "onnx", plan, tmp_path, parity_inputs=held_out, min_sqnr_db=200.0)
    assert list(tmp_path.iterdir()) == []
