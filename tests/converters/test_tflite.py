from __future__ import annotations

import pytest

from converters import convert

from .checks import assert_artifact, assert_parity, assert_runner_order


@pytest.fixture(scope="module")
def arts(tmp_path_factory, vit_unit, cross_unit, fresh_inputs):
    out = tmp_path_factory.mktemp("tflite")
    return {
        "vit32": convert(vit_unit, "tflite", "fp32", out, parity_inputs=fresh_inputs["tiny_vit"]),
        "vit16": convert(vit_unit, "tflite", "fp16", out, parity_inputs=fresh_inputs["tiny_vit"]),
        "cross": convert(cross_unit, "tflite", "fp32", out, parity_inputs=fresh_inputs["cross"]),
    }


def test_fp32_matches_eager(arts, vit_unit):
    art = arts["vit32"]
    assert_artifact(art, vit_unit, "tflite", "fp32", "ai-edge-litert")
    assert_parity(art, vit_unit, min_db=100, max_diff=1e-5)
    assert "FULLY_CONNECTED" in art.facts["tflite_ops"] or "BATCH_MATMUL" in art.facts["tflite_ops"]


def test_fp16_weights_halve_the_file(arts, vit_unit):
    art = arts["vit16"]
    assert_artifact(art, vit_unit, "tflite", "fp16", "ai-edge-litert")
    assert_parity(art, vit_unit, min_db=40, max_diff=0.05)
    assert "DEQUANTIZE" in art.facts["tflite_ops"]
    assert art.size_bytes < arts["vit32"].size_bytes * 0.7


def test_two_in_two_out_order_despite_alphabetical_signature(arts, cross_unit, fresh_inputs):
    assert_artifact(arts["cross"], cross_unit, "tflite", "fp32", "ai-edge-litert")
    assert_parity(arts["cross"], cross_unit, min_db=100, max_diff=1e-5)
    assert_runner_order(arts["cross"], cross_unit, fresh_inputs["cross"])


def test_fully_integer_tflite_is_driven_with_float_inputs(tmp_path):
    """AI Edge Quantizer's static int8 gives a .tflite with int8 input and output; the runner takes the unit's
    float inputs and answers floats through the I/O tensors' scales and zero-points (it used to cast the floats
    to int8 and return the raw integers: -41.8 dB)."""
    import numpy as np
    import torch
    from ai_edge_quantizer import quantizer, recipe
    from torch import nn

    from converters.parity import sqnr_db
    from converters.targets.tflite.runner import LiteRTRunner
    from converters.unit import DeployUnit

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)).eval()
    unit = DeployUnit("int_io", model, (torch.randn(1, 3, 8, 8),), ("image",), ("logits",))
    fp32 = convert(unit, "tflite", "fp32", tmp_path)
    images = [torch.randn(1, 3, 8, 8) for _ in range(8)]
    qt = quantizer.Quantizer(str(fp32.path), recipe.static_wi8_ai8())
    # Its ranges are moving averages, narrower than the data: calibrate on twice the amplitude so none clips.
    calibration = qt.calibrate({"serving_default": [{"image": 2 * x.numpy()} for x in images]})
    qt.quantize(calibration).export_model(str(tmp_path / "int8.tflite"))
    runner = LiteRTRunner(tmp_path / "int8.tflite", num_threads=1)
    assert (runner.inputs[0].dtype, runner.outputs[0].dtype) == ("int8", "int8")  # the file's true interface
    got = np.concatenate([runner.run(x.numpy())[0] for x in images])
    want = torch.cat([model(x) for x in images]).detach().numpy()
    db = sqnr_db(want, got)
    print(f"fully integer .tflite on float inputs vs fp32 eager: {db:.1f} dB")
    assert got.dtype == np.float32 and db > 25.0


def test_single_head_attention_runs_whole_on_xnnpack(tmp_path):
    """litert-torch's own SDPA lowering turns a single-head Q·Kᵀ into a FULLY_CONNECTED whose weight (K) is
    computed at run time, which LiteRT's XNNPACK delegate does not take: the scores ran on the builtin kernel and
    split the graph (EfficientTAM's memory attention was 1.5× eager). Now every FULLY_CONNECTED reads a constant,
    both products are BATCH_MATMULs, the whole graph is one delegate partition, and the masked result is eager's."""
    from collections import Counter

    import torch
    import torch.nn.functional as F
    from torch import nn

    from converters.targets.tflite.runner import LiteRTRunner
    from converters.unit import DeployUnit

    class MaskedCross(nn.Module):  # memory attention's shape: one head, an additive bias over the memory slots
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v = nn.Linear(16, 16), nn.Linear(8, 16), nn.Linear(8, 16)

        def forward(self, x: torch.Tensor, memory: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            q, k, v = (t.unsqueeze(1) for t in (self.q(x), self.k(memory), self.v(memory)))
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias).squeeze(1)

    torch.manual_seed(0)
    bias = torch.zeros(1, 1, 1, 24)
    bias[..., 16:] = -3.0e4  # the last memory slot is switched off
    unit = DeployUnit(
        "masked",
        MaskedCross().eval(),
        (torch.randn(1, 12, 16), torch.randn(1, 24, 8), bias),
        ("x", "memory", "bias"),
        ("out",),
    )
    art = convert(unit, "tflite", "fp32", tmp_path)
    assert_parity(art, unit, min_db=100, max_diff=1e-5)
    runner = LiteRTRunner(art.path, num_threads=1)
    runner.interpreter.allocate_tensors()  # applies the XNNPACK delegate, listed as DELEGATE ops
    ops = runner.op_details()
    produced = {i for op in ops for i in op["outputs"]}
    assert not [op for op in ops if op["op_name"] == "FULLY_CONNECTED" and op["inputs"][1] in produced]
    kinds = Counter(op["op_name"] for op in ops)
    assert kinds["BATCH_MATMUL"] == 2 and kinds["DELEGATE"] == 1, kinds
