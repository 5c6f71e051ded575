"""Quantized artifacts from a plan: each runs in its runtime, agrees with the fake-quant model, is smaller."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from converters import ConversionError, DeployUnit, convert, load_runner
from converters.parity import sqnr_db
from converters.quantized import MIN_SQNR_VS_REFERENCE_DB, convert_quantized
from converters.targets.onnx.runner import optimized_op_counts
from quant.fake_quant import CalibrationStats, calibrate, collect_stats
from quant.plan import QuantPlan
from tests.converters.int8_kernels import (
    ORT_FLOAT_GEMMS,
    ORT_INT8_OPS,
    litert_gemms,
    xnnpack_gemms,
)
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
    vs_ref, vs_fake = (quant[f"parity_vs_{k}"]["logits"]["sqnr_db"] for k in ("reference", "fake_quant"))
    runner = load_runner(target, art.path, num_threads=1)
    got = np.concatenate([runner.run(x.numpy())[0].reshape(-1) for (x,) in held_out])
    want = np.concatenate([unit.module(x).detach().numpy().reshape(-1) for (x,) in held_out])
    vs_fp32 = sqnr_db(want, got)  # measured here from the artifact's outputs, not read from its facts
    print(f"{target}: {art.size_bytes} B, dB vs reference {vs_ref:.1f}, fake-quant {vs_fake:.1f}, fp32 {vs_fp32:.1f}")
    assert art.precision == "int8" and art.path == tmp_path / f"tiny.int8{art.path.suffix}"
    assert art.parity["logits"].sqnr_db == vs_ref >= 30.0 and art.min_sqnr_db == MIN_SQNR_VS_REFERENCE_DB
    # Measured 26-37 dB; an fp32 artifact of this unit is at ~130 dB, so a silently float artifact fails here.
    assert 20.0 <= vs_fp32 <= 50.0
    fp32 = convert(unit, target, "fp32", tmp_path / "fp32")
    assert art.size_bytes < 0.6 * fp32.size_bytes
    assert got.shape == (4 * 10,) and got.dtype == "float32"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([art.path.name, "fp32"])  # no temp file left

    # The int8 kernels the runtime will run, counted in the artifact, against the layers the plan quantizes:
    # 9 Linears, the patch-embed conv and (block 0's explicit attention) 2 activation-activation matmuls.
    planned = Counter(lq.kind for lq in plan.layers.values())
    assert planned == {"linear": 9, "conv2d": 1, "matmul": 2}
    if target == "onnx":
        assert vs_ref == vs_fake >= 40.0  # the plan's own qparams, run by integer kernels
        kernels = optimized_op_counts(art.path)
        assert sum(kernels[op] for op in ORT_INT8_OPS) == planned.total()
        # The patch-embed conv is an integer GEMM over its patches (conv_gemm.py), not the slow ConvInteger.
        assert (kernels["QGemm"], kernels["ConvInteger"]) == (planned["linear"], 0)
        assert kernels["DequantizeLinear"] == 0  # nothing runs in float on dequantized weights
        assert sum(kernels[op] for op in ORT_FLOAT_GEMMS) == 2  # block 1's fused attention, not planned
    elif target == "executorch":
        gemms = xnnpack_gemms(art.path)
        # XNNPACK has no int8 batched matmul: the planned matmuls and block 1's attention stay float.
        assert gemms == {
            ("XNNFullyConnected", "qcint8", "qdint8"): planned["linear"],
            ("XNNConv2d", "qcint8", "qdint8"): planned["conv2d"],
            ("XNNBatchMatrixMultiply", "fp32", "fp32"): 4,
        }
        assert not {"aten_linear_default", "aten_convolution_default"} & set(art.facts["undelegated_ops"])
        assert vs_fp32 > vs_fake  # dynamic activations: closer to fp32 than the plan's static grids
    else:
        assert litert_gemms(art.path) == {
            ("FULLY_CONNECTED", "int8"): planned["linear"],
            ("CONV_2D", "int8"): planned["conv2d"],
            ("BATCH_MATMUL", "float32"): 4,  # no int8 weight to hold: attention stays float
        }


def test_coreml_holds_int8_activations_and_int8_int4_weights(unit, model, plan, tmp_path) -> None:
    w8 = convert_quantized(unit, "coreml", plan, tmp_path)
    assert w8.precision == "w8a8" and w8.path.name == "tiny.w8a8.mlpackage"
    assert w8.parity is None and "macOS" in w8.parity_note
    assert w8.facts["minimum_deployment_target"] == "iOS17"
    quant = w8.facts["quant"]
    assert quant["weight_bits_held"] == {"conv": {"int8": 1}, "linear": {"int8": 9}}
    assert quant["target_holds"] == "4/6/8-bit weights and 8-bit activations"
    # Every planned input (Linear/Conv: 1, attention MatMul: 2) is a quantize/dequantize pair on the plan's grid.
    acts = quant["activation_quantization"]
    assert acts["quantize_ops"] == acts["dequantize_ops"] == sum(len(lq.inputs) for lq in plan.layers.values())
    assert acts["quantized_gemm_inputs"] == {"conv": 1, "linear": 9, "matmul": 2}
    assert w8.facts["mil_ops"]["quantize"] == acts["quantize_ops"]
    assert w8.facts["mil_ops"]["constexpr_affine_dequantize"] == 10  # iOS17's int8 weight op
    assert not (w8.path / "executorch_debug_handle_mapping.json").exists()

    w4 = convert_quantized(unit, "coreml", calibrate(model, _images(8, 1), weight_bits=4, progress=False), tmp_path)
    assert w4.precision == "w4a8" and w4.facts["minimum_deployment_target"] == "iOS18"
    assert w4.facts["quant"]["weight_bits_held"] == {"conv": {"int4": 1}, "linear": {"int4": 9}}
    assert w4.facts["quant"]["weight_storage"]["int4"]["bits_per_weight"] < 4.5
    assert w4.size_bytes < 0.8 * w8.size_bytes


def test_coreml_weights_are_checked_against_the_plan(unit, model, plan, tmp_path) -> None:
    from converters.targets.coreml.program import load_program
    from converters.targets.coreml.quantized import plan_layers

    art = convert_quantized(unit, "coreml", plan, tmp_path)
    program = load_program(art.path)
    assert set(plan_layers(program, plan, model)) == {n for n, lq in plan.layers.items() if lq.weight is not None}
    other = make_tiny_vit(seed=1)  # the same architecture with other weights: its integers are not in the program
    with pytest.raises(ConversionError, match=r"integers of plan layer 'patch_embed' are not in the ML program"):
        plan_layers(program, plan, other)


class Wide(nn.Module):
    """Patch-embed conv, then two Linears with 1024 inputs: wide enough that a palette's LUT is small beside
    its indices, as in real ViTs (Core ML before iOS 26 stores a 64-entry LUT per output channel)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 4, 4)
        self.fc1 = nn.Linear(1024, 128)
        self.fc2 = nn.Linear(1024, 128)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.conv(image).flatten(1)
        return F.relu(self.fc1(F.gelu(x))) + self.fc2(x)  # XNNPACK fuses the ReLU: output range [0, inf]


@pytest.fixture(scope="module")
def wide() -> tuple[DeployUnit, CalibrationStats]:
    torch.manual_seed(0)
    model = Wide().eval()
    unit = DeployUnit("wide", model, tuple(_images(1, 3)), ("image",), ("out",))
    return unit, collect_stats(model, _images(8, 1), progress=False)


def test_coreml_holds_6bit_weights_as_palettes(wide, tmp_path) -> None:
    unit, stats = wide
    arts = {
        name: convert_quantized(unit, "coreml", stats.plan(bits, 8), tmp_path / name, coreml_target=target)
        for name, bits, target in (("w8", 8, None), ("w6", 6, None), ("w6-ios26", 6, "iOS26"), ("w4", 4, None))
    }
    sizes = {name: art.size_bytes for name, art in arts.items()}
    print("Core ML sizes (B):", sizes)
    w6 = arts["w6"]
    assert w6.precision == "w6a8" and w6.facts["minimum_deployment_target"] == "iOS18"
    quant = w6.facts["quant"]
    assert quant["weight_bits_held"] == {"conv": {"palettized6": 1}, "linear": {"palettized6": 2}}
    assert w6.facts["mil_ops"]["constexpr_lut_to_dense"] == 3
    assert quant["activation_quantization"]["quantized_gemm_inputs"] == {"conv": 1, "linear": 2}
    # iOS 18 scales the LUT before the lookup, so it is repeated per output channel: 64 bytes a channel, but
    # fc1 and fc2 have one shape and so share one stored LUT. iOS 26 keeps one 64-byte LUT per tensor.
    numel = 1024 * 128
    per_channel = 8 * (2 * numel * 6 / 8 + 128 * 64 + 2 * 128 * 2) / (2 * numel)
    assert abs(quant["weight_storage"]["palettized6"]["bits_per_weight"] - per_channel) < 0.1
    ios26 = arts["w6-ios26"].facts["quant"]
    assert arts["w6-ios26"].facts["minimum_deployment_target"] == "iOS26"
    assert ios26["weight_bits_held"] == quant["weight_bits_held"]
    assert ios26["weight_storage"]["palettized6"]["bits_per_weight"] < 6.1
    assert sizes["w4"] < sizes["w6-ios26"] < sizes["w6"] < sizes["w8"]
    # 6 of 8 bits on the 262k weights that dominate the file, plus the LUT and the unquantized rest.
    assert sizes["w6"] < 0.8 * sizes["w8"]


def test_executorch_holds_4bit_linear_weights(wide, tmp_path) -> None:
    unit, stats = wide
    held_out = [(x,) for x in _images(3, 7)]
    w4 = convert_quantized(unit, "executorch", stats.plan(4, 8), tmp_path, parity_inputs=held_out)
    w8 = convert_quantized(unit, "executorch", stats.plan(8, 8), tmp_path, parity_inputs=held_out)
    quant = w4.facts["quant"]
    print(f"executorch: int8 {w8.size_bytes} B, int4 {w4.size_bytes} B, {w4.parity['out'].sqnr_db:.1f} dB")
    assert w4.precision == "w4a8" and w8.precision == "int8"
    # Read back from the written delegate: 4-bit per-channel GEMM weights, dynamic int8 inputs; no 4-bit conv.
    assert quant["xnnpack_gemms"] == {
        "conv": {"weights": {"qcint8": 1}, "inputs": {"qdint8": 1}},
        "linear": {"weights": {"qcint4": 2}, "inputs": {"qdint8": 2}},
    }
    assert quant["weight_bits_held"] == {"conv": {"int8": 1}, "linear": {"int4": 2}}
    assert quant["int4_layers"] == 2 and quant["int4_convs_in_int8_storage"] == ["conv"]
    assert w8.facts["quant"]["weight_bits_held"] == {"conv": {"int8": 1}, "linear": {"int8": 2}}
    assert w4.parity["out"].sqnr_db >= MIN_SQNR_VS_REFERENCE_DB
    assert w8.size_bytes - w4.size_bytes > 0.9 * 2 * 1024 * 128 / 2  # half a byte saved per Linear weight


def test_pt2e_artifacts_hold_the_plans_integers_at_rounding_ties(tmp_path) -> None:
    """PT2E quantizes as round(w * (1/s)), fake-quant as round(w / s): they disagree on weights at a tie.
    The lowering snaps weights onto the plan's grid first, so the plan's integers are what ships."""
    from quant.plan import LayerQuant, TensorQParams
    from quant.pt2e import quantize_pt2e

    g = torch.Generator().manual_seed(0)
    scale = torch.rand(16, generator=g) * 0.01 + 1e-3
    levels = torch.randint(-100, 100, (16, 64), generator=g).float()
    layer = nn.Linear(64, 16).eval()
    with torch.no_grad():
        layer.weight.copy_((levels + 0.5) * scale[:, None])  # every weight at a tie
    q = TensorQParams(8, True, "per_channel", scale.tolist(), [0] * 16, -127, 127, "test", ch_axis=0)
    act = TensorQParams(8, False, "per_tensor", [0.05], [0], -128, 127, "test")
    plan = QuantPlan({"": LayerQuant("", "linear", "test", q, [act], [16, 64])})
    planned = torch.clamp(torch.round(layer.weight.detach() / scale[:, None]), -127, 127)
    assert (planned != torch.round(layer.weight.detach() * (1.0 / scale[:, None]))).any()  # the ties are real

    x = torch.randn(1, 4, 64, generator=g)
    graph = quantize_pt2e(layer, (x,), plan, activations="dynamic")
    (dq,) = [n for n in graph.graph.nodes if n.target == torch.ops.quantized_decomposed.dequantize_per_channel.default]
    assert torch.equal(getattr(graph, dq.args[0].target).float(), planned)
    # Core ML checks every layer's integers in the saved program against the plan (and fails otherwise).
    unit = DeployUnit("ties", layer, (x,), ("x",), ("y",))
    art = convert_quantized(unit, "coreml", plan, tmp_path)
    assert art.facts["quant"]["weight_bits_held"] == {"linear": {"int8": 1}}


def test_bits_a_target_cannot_hold_are_refused(unit, model, tmp_path) -> None:
    stats = collect_stats(model, _images(8, 1), progress=False)
    with pytest.raises(ConversionError, match=r"onnx holds 4/8-bit weights .* the plan has 6-bit weights in 10 layer"):
        convert_quantized(unit, "onnx", stats.plan(6, 8), tmp_path)
    with pytest.raises(ConversionError, match=r"executorch holds 4/8-bit weights .* the plan has 6-bit weights"):
        convert_quantized(unit, "executorch", stats.plan(6, 8), tmp_path)
    with pytest.raises(ConversionError, match=r"coreml holds 4/6/8-bit weights and 8-bit activations; .* 6-bit act"):
        convert_quantized(unit, "coreml", stats.plan(8, 6), tmp_path)
    with pytest.raises(ConversionError, match=r"Core ML iOS17 cannot hold this plan's 6-bit weights"):
        convert_quantized(unit, "coreml", stats.plan(6, 8), tmp_path, coreml_target="iOS17")
    assert list(tmp_path.iterdir()) == []


def test_parity_gate_leaves_no_file(unit, plan, held_out, tmp_path) -> None:
    with pytest.raises(
        ConversionError, match=r"'logits' is .* dB from its reference \(the plan's fake-quant .*< 200 dB"
    ):
        convert_quantized(unit, "onnx", plan, tmp_path, parity_inputs=held_out, min_sqnr_db=200.0)
    assert list(tmp_path.iterdir()) == []


class SharedProjection(nn.Module):
    """One Linear applied to two token sets, as EfficientTAM's pooled memory attention applies k_proj to the pooled
    bank and to the object pointers: the exporter writes one Transpose of the weight feeding both MatMuls."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(64, 256)  # large enough that the exporter does not fold the shared Transpose
        self.head = nn.Linear(256, 4)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat((self.proj(a), self.proj(b)), dim=1))


def test_onnx_quantizes_a_linear_called_twice(tmp_path) -> None:
    import onnx

    torch.manual_seed(0)
    model = SharedProjection().eval()
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(1, 8, 64, generator=g), torch.randn(1, 3, 64, generator=g)) for _ in range(12)]
    unit = DeployUnit("shared", model, batches[0], ("a", "b"), ("out",))
    fp32 = convert(unit, "onnx", "fp32", tmp_path / "fp32")
    shared = [n for n in onnx.load(str(fp32.path)).graph.node if n.op_type == "Transpose"]
    assert shared, "the exporter no longer shares the weight through a Transpose: this test checks nothing"
    plan = calibrate(model, batches[:8], progress=False)
    art = convert_quantized(unit, "onnx", plan, tmp_path, parity_inputs=batches[8:])
    assert art.parity["out"].sqnr_db >= 30.0
    kernels = optimized_op_counts(art.path)
    assert sum(kernels[op] for op in ORT_INT8_OPS) == 3  # both calls of proj and the head run int8


class ConvStack(nn.Module):
    """The conv shapes a hybrid has: strided 3x3 with padding, depthwise 3x3, a 2x2 patch conv, and a pointwise 1x1
    without bias whose output only leaves the graph (as EfficientTAM's memory encoder ends)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 24, 1, bias=False)
        self.head = nn.Conv2d(16, 8, 2, stride=2)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.dw(F.relu(self.stem(image))))
        return self.head(x), self.pw(x)


def test_onnx_convs_run_as_integer_kernels(tmp_path) -> None:
    """Planned convs run as onnxruntime integer kernels with the plan's integers: with an output grid (every conv
    but a patch embedding, depthwise ones included) as QLinearConv, the patch embedding as an integer GEMM over
    its patches. ConvInteger, a reference kernel, made int8 convs slower than float ones."""
    torch.manual_seed(0)
    model = ConvStack().eval()
    images = _images(10, 5)
    unit = DeployUnit("convs", model, (images[0],), ("image",), ("out", "features"))
    held = [(x,) for x in images[8:]]
    plan = calibrate(model, images[:8], progress=False)
    assert [name for name, lq in plan.layers.items() if lq.output is not None] == ["stem", "dw", "pw"]
    art = convert_quantized(unit, "onnx", plan, tmp_path, parity_inputs=held)
    quant = art.facts["quant"]
    for output in ("out", "features"):  # the same integer arithmetic as fake-quant
        assert float(quant["parity_vs_fake_quant"][output]["sqnr_db"]) >= 40.0
    kernels = optimized_op_counts(art.path)
    assert (kernels["QLinearConv"], kernels["QGemm"] + kernels["MatMulIntegerToFloat"], kernels["ConvInteger"]) == (
        3,
        1,
        0,
    )
    assert sum(kernels[op] for op in ORT_FLOAT_GEMMS) == 0


def test_onnx_runs_efficienttam_attention_matmuls_int8(tmp_path) -> None:
    """EfficientTAM's image encoder: the recipe switches its fused attention to explicit `MatMul`s, so Q·Kᵀ and
    A·V are planned and run int8 with the patch-embed and neck convs; the caller's model keeps fused SDPA."""
    import dataclasses

    from edgevit.models.efficienttam.config import VARIANTS
    from edgevit.models.efficienttam.image_encoder import Attention, ImageEncoder
    from edgevit.pipeline.passes.quant_recipe import prepare, uniform_plan

    tiny = dict(embed_dim=32, num_heads=2, depth=2, window_size=2, window_block_indexes=(0,), image_size=64, d_model=32)
    torch.manual_seed(0)
    model = ImageEncoder(dataclasses.replace(VARIANTS["ti"], **tiny)).eval()
    g = torch.Generator().manual_seed(4)
    images = [(torch.randn(1, 3, 64, 64, generator=g),) for _ in range(6)]
    prepared = prepare("ptq", model, images[:4])
    plan = uniform_plan(prepared, 8, 8)
    assert Counter(lq.kind for lq in plan.layers.values()) == {"linear": 8, "matmul": 4, "conv2d": 3}
    assert not any(m.explicit_matmuls for m in model.modules() if isinstance(m, Attention))
    unit = DeployUnit("encoder", prepared.module, images[0], ("image",), ("features",))
    art = convert_quantized(unit, "onnx", plan, tmp_path, parity_inputs=images[4:])
    assert art.facts["quant"]["parity_vs_fake_quant"]["features"]["sqnr_db"] >= 30.0
    kernels = optimized_op_counts(art.path)
    assert sum(kernels[op] for op in ORT_INT8_OPS) == len(plan.layers)  # every planned GEMM an int8 kernel
    assert sum(kernels[op] for op in ORT_FLOAT_GEMMS) == kernels["ConvInteger"] == 0


class FoldAndScore(nn.Module):
    """What failed in ExecuTorch int8: a MobileViT fold (tokens past a LayerNorm reshaped back to a map for a 1x1
    conv), and a score read from one token of a Linear whose other tokens span 100x its range (EfficientTAM's
    object-score token beside its prompt tokens)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.norm = nn.LayerNorm(16)
        self.fc = nn.Linear(16, 16)
        self.fuse = nn.Conv2d(16, 8, 1)
        self.tokens = nn.Linear(16, 16)
        self.score = nn.Linear(16, 1)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(image)
        b, c, h, w = x.shape
        x = self.fc(self.norm(x.flatten(2).transpose(1, 2)))
        return self.fuse(x.transpose(1, 2).reshape(b, c, h, w)), self.score(F.gelu(self.tokens(tokens))[:, 1])


def test_executorch_int8_lowers_a_fold_and_is_gated_as_xnnpack_runs(tmp_path) -> None:
    """The fold used to fail lowering (`aten._to_copy`, "required rank 4 tensor to use channels_last format"):
    dynamically quantized GEMMs are now partitioned one by one. The score missed the parity gate: XNNPACK
    quantizes a Linear's input per row, the PT2E reference per tensor; the reference now does as XNNPACK."""
    torch.manual_seed(0)
    model = FoldAndScore().eval()
    g = torch.Generator().manual_seed(2)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.randn(1, 4, 16, generator=g)
        tokens[:, 0] *= 100.0
        return torch.randn(1, 3, 8, 8, generator=g), tokens

    batches = [batch() for _ in range(7)]
    unit = DeployUnit("fold", model, batches[0], ("image", "tokens"), ("map", "score"))
    plan = calibrate(model, batches[:4], progress=False)
    art = convert_quantized(unit, "executorch", plan, tmp_path, parity_inputs=batches[4:])
    assert min(p.sqnr_db for p in art.parity.values()) >= MIN_SQNR_VS_REFERENCE_DB
    assert art.facts["quant"]["xnnpack_gemms"]["linear"]["inputs"] == {"qdint8": 3}
    runner = load_runner("executorch", art.path, num_threads=1)
    got = [runner.run(*(t.numpy() for t in x))[1] for x in batches[4:]]
    want = [model(*x)[1].detach().numpy() for x in batches[4:]]
    assert sqnr_db(np.concatenate(want), np.concatenate(got)) >= 30.0  # per-row int8: close to fp32
