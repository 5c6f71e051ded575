from __future__ import annotations

import pytest
import torch
from torch import nn

from converters import DeployUnit
from converters.quantized import convert_quantized
from converters.targets.onnx.runner import optimized_op_counts
from edgevit.models import create
from quant.adaround import AdaRoundLayer
from quant.bn_fold import fold_batchnorm
from quant.errors import QuantError
from quant.fake_quant import FakeQuantize, FakeQuantLayer, apply_plan, calibrate, strip_fake_quant
from quant.metrics import model_outputs, outputs_sqnr, sqnr
from quant.plan import QuantPlan
from quant.qhyvit import qhyvit_quantize
from quant.reconstruction import capture
from quant.scale_search import SearchConfig
from tests.quant.tiny_hybrid import image_batches, make_tiny_hybrid

FAST = SearchConfig(grid=tuple(round(0.3 + 0.7 * i / 17, 3) for i in range(18)), max_samples=16)
ITERS = 100


@pytest.fixture(scope="module")
def data() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return image_batches(16, seed=1), image_batches(8, seed=2)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return make_tiny_hybrid()


@pytest.fixture(scope="module")
def w4a8(model, data) -> dict[bool, tuple[nn.Module, QuantPlan]]:
    calib, _ = data
    return {
        joint: qhyvit_quantize(
            model, calib, model.bridge_blocks(), 4, 8, joint_bridge=joint, iters=ITERS, search=FAST, progress=False
        )
        for joint in (True, False)
    }


def test_beats_plain_ptq_w4a8(model, data, w4a8) -> None:
    calib, evalset = data
    reference = model_outputs(model, evalset)
    folded, _ = fold_batchnorm(model, calib[0])
    figures = {
        "PTQ min-max": apply_plan(model, calibrate(model, calib, weight_bits=4, act_bits=8, progress=False)),
        "PTQ min-max, BN folded": apply_plan(
            folded, calibrate(folded, calib, weight_bits=4, act_bits=8, progress=False)
        ),
        "Q-HyViT joint bridges": w4a8[True][0],
        "Q-HyViT separate blocks": w4a8[False][0],
    }
    db = {name: outputs_sqnr(reference, model_outputs(m, evalset)) for name, m in figures.items()}
    print("W4A8 output SQNR on held-out images: " + ", ".join(f"{k} {v:.2f} dB" for k, v in db.items()))
    assert db["Q-HyViT joint bridges"] > max(db["PTQ min-max"], db["PTQ min-max, BN folded"]) + 1.5
    assert db["Q-HyViT separate blocks"] > max(db["PTQ min-max"], db["PTQ min-max, BN folded"]) + 1.5


def test_joint_bridge_vs_separate_on_the_bridge_output(model, data, w4a8) -> None:
    # The first bridge sees the same quantized input either way (every unit before it is identical), so
    # its output error compares the two reconstructions of the pair alone.
    calib, evalset = data
    folded, _ = fold_batchnorm(model, calib[0])
    first = model.bridge_blocks()[0].attn_name
    figures = {}
    for name, batches in (("calibration", calib), ("held-out", evalset)):
        (reference,) = capture(folded, batches, first, "output")
        joint = sqnr(reference, capture(w4a8[True][0], batches, first, "output")[0])
        separate = sqnr(reference, capture(w4a8[False][0], batches, first, "output")[0])
        figures[name] = (joint, separate)
        print(f"W4A8 {first} output SQNR, {name}: joint {joint:.2f} dB, separate {separate:.2f} dB")
    assert figures["calibration"][0] >= figures["calibration"][1] - 0.1
    assert figures["held-out"][0] >= figures["held-out"][1] - 0.25


def test_plan_records_the_method_and_units(model, w4a8) -> None:
    joint_plan, separate_plan = w4a8[True][1], w4a8[False][1]
    meta = joint_plan.metadata
    assert meta["method"] == "qhyvit" and meta["joint_bridge"] and not separate_plan.metadata["joint_bridge"]
    assert {layer.method for layer in joint_plan.layers.values()} == {"qhyvit"}
    assert meta["bridges"] == [["stages.2.0", "stages.2.1"], ["stages.3.0", "stages.3.1"], ["stages.4.0", "stages.4.1"]]
    joint_units = [u["unit"] for u in meta["reconstruction"]["units"]]
    separate_units = [u["unit"] for u in separate_plan.metadata["reconstruction"]["units"]]
    assert "stages.2.0+stages.2.1" in joint_units and "stages.2.0" not in joint_units
    assert "stages.2.0" in separate_units and "stages.2.1" in separate_units
    assert joint_units[0] == "stem.conv" and joint_units[-1] == "head.fc"  # layers outside blocks: own units
    assert len(meta["bn_folded"]) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert QuantPlan.from_json(joint_plan.to_json()).metadata == meta


def test_weights_ship_on_grid_and_the_input_model_is_untouched(model, w4a8) -> None:
    fq, plan = w4a8[True]
    assert isinstance(model.get_submodule("stages.2.0.conv1_1x1.bn"), nn.BatchNorm2d)
    assert not any(isinstance(m, FakeQuantLayer) for m in model.modules())
    wrapped = [n for n, m in fq.named_modules() if isinstance(m, FakeQuantLayer)]
    assert wrapped == list(plan.layers)
    for name in wrapped:
        layer = fq.get_submodule(name)
        assert torch.equal(layer.weight_q, layer.inner.weight)  # the float weight already is the quantized one
    floats = strip_fake_quant(fq)  # what a converter lowers, with the plan
    for name, layer in plan.layers.items():
        w = floats.get_submodule(name).weight.detach()
        assert torch.equal(FakeQuantize(layer.weight)(w), w)


def test_other_hybrids_run_end_to_end(data) -> None:
    calib, evalset = data
    # MobileViTv2: GroupNorm'd separable attention on 1x1 convs.
    v2 = make_tiny_hybrid(version=2)
    fq, plan = qhyvit_quantize(v2, calib[:4], v2.bridge_blocks(), 6, 6, iters=10, search=FAST, progress=False)
    assert outputs_sqnr(model_outputs(v2, evalset[:2]), model_outputs(fq, evalset[:2])) > 0.0
    assert any("transformer.0.attn.qkv_proj" in n for n in plan.layers)
    # EfficientFormer: the bridge path runs through the parameter-free Flat reshape.
    ef = create(
        "efficientformer_l1",
        num_classes=10,
        img_size=64,
        widths=(8, 16, 24, 32),
        depths=(1, 1, 1, 2),
        key_dim=8,
        num_heads=2,
    )
    batches = [torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    fq, plan = qhyvit_quantize(ef, batches, ef.bridge_blocks(), 8, 8, iters=10, search=FAST, progress=False)
    units = [u["unit"] for u in plan.metadata["reconstruction"]["units"]]
    assert "stages.3.blocks.0+stages.3.blocks.2" in units
    assert outputs_sqnr(model_outputs(ef, batches[:1]), model_outputs(fq, batches[:1])) > 10.0


def test_bridges_of_another_model_are_refused(model, data) -> None:
    calib, _ = data
    other = make_tiny_hybrid(seed=1)
    with pytest.raises(QuantError, match="not a module of this model"):
        qhyvit_quantize(model, calib, other.bridge_blocks(), iters=1, search=FAST, progress=False)


def test_plan_keeps_conv_output_grids_the_onnx_artifact_runs(model, tmp_path) -> None:
    """The scale search rebuilt every plan entry without `LayerQuant.output`: a qhyvit plan of a hybrid had no conv
    output grids where a ptq plan has them, so its ONNX convs were left float kernels instead of QLinearConv. The
    grids sit on the same convs, and reconstruction rounds each conv's output and bias as the artifact will."""
    images = [x[i : i + 1] for x in image_batches(2, batch=4, seed=3) for i in range(4)]
    ptq = calibrate(model, images[:6], progress=False)
    coarse = SearchConfig(grid=(0.3, 0.44, 0.58, 0.72, 0.86, 1.0), rounds=1, max_samples=16)
    fq, plan = qhyvit_quantize(model, images[:6], model.bridge_blocks(), 8, 8, iters=2, search=coarse, progress=False)
    graded = sorted(name for name, lq in plan.layers.items() if lq.output is not None)
    assert graded and graded == sorted(name for name, lq in ptq.layers.items() if lq.output is not None)
    assert plan.metadata["search"]["output_grids"] == len(graded)

    # Learned rounding is trained on what the artifact runs: the conv's output rounded, its bias on the int32 grid.
    name = graded[len(graded) // 2]
    inner = strip_fake_quant(fq).get_submodule(name)
    x = torch.randn(2, inner.in_channels, 8, 8)
    recon = AdaRoundLayer(inner, plan.layers[name])
    recon.mode = "nearest"
    assert torch.equal(recon(x), FakeQuantLayer(inner, plan.layers[name])(x))

    floats = strip_fake_quant(fq)
    unit = DeployUnit("hybrid", floats, (images[0],), ("image",), ("logits",))
    art = convert_quantized(unit, "onnx", plan, tmp_path, parity_inputs=[(x,) for x in images[6:]])
    print(f"qhyvit W8A8 ONNX vs its fake-quant model: {art.parity['logits'].sqnr_db:.1f} dB")
    # The plan's own integer arithmetic: 139 dB here, 27 while symmetric activation grids stopped at ±127.
    assert art.parity["logits"].sqnr_db >= 40.0
    kernels = optimized_op_counts(art.path)
    assert (kernels["QLinearConv"], kernels["ConvInteger"], kernels["Conv"]) == (len(graded), 0, 0)
