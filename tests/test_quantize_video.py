"""Quantizing EfficientTAM: every unit calibrated on what it sees while tracking, and the int8 tracker's
masks compared with the fp32 tracker's. Also `edgevit convert --quant`, and Q-HyViT through the same pipeline."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from converters.bundle import read_manifest
from converters.targets.onnx.runner import optimized_op_counts
from edgevit.cli import main
from edgevit.data.video import read_frames, sample_video
from edgevit.models import create
from edgevit.pipeline import QuantConfig, Recipe, run, run_model
from edgevit.video.assemble import bundle_tracker, eager_tracker, mask_iou
from edgevit.video.calibration import record_unit_inputs
from edgevit.video.tracker import UNIT_NAMES, Prompt
from quant.metrics import sqnr
from quant.plan import QuantPlan
from tests.converters.int8_kernels import ORT_INT8_OPS, litert_gemms, xnnpack_gemms

SIZE = 128
FRAMES = 6
# Every kind of layer the full model has, fewer of each: windowed and global trunk blocks, two memory attention
# layers (self + cross). Conversion time grows with the graph, and the int8 bundle is three targets × four units.
SMALL = {"image_size": SIZE, "depth": 3, "memory_attention_layers": 2}


@pytest.fixture(scope="module")
def tracking_model():
    """EfficientTAM-Ti at 128 px with a shallower trunk and memory attention (`SMALL`). Random weights say "no
    object" on every frame (STACK.md), which makes mask comparisons vacuous; the object-score bias is raised so
    masks cover part of the frame."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create("efficienttam_ti", **SMALL)
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(20.0)
    return model


TARGETS = ("onnx", "executorch", "tflite")  # every int8 target that runs here (Core ML runs only on macOS)


@pytest.fixture(scope="module")
def int8_bundle(tracking_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("etam_int8") / "bundle"
    recipe = Recipe("efficienttam_ti", overrides=SMALL, passes=(QuantConfig("ptq"),), targets=TARGETS)
    manifest = run_model(tracking_model, recipe, out=out)
    return out, manifest


def test_recorded_inputs_follow_the_tracking_loop(tracking_model) -> None:
    frames = list(read_frames(sample_video("bikes"), 5))
    seen = record_unit_inputs(tracking_model, frames)
    assert {name: len(calls) for name, calls in seen.items()} == dict.fromkeys(UNIT_NAMES, 5)
    # memory attention: the prompted frame meets an empty bank, then the bank fills one slot per frame
    # (the conditioning frame's memory plus every tracked frame's) and object pointers with it.
    slots = [int(call[2].sum()) for call in seen["memory_attention"]]
    pointers = [int(call[4].sum()) for call in seen["memory_attention"]]
    assert slots == [0, 1, 2, 3, 4] and pointers == [0, 1, 2, 3, 4]
    assert seen["image_encoder"][0][0].shape == (1, 3, SIZE, SIZE)
    assert float(seen["image_encoder"][0][0].max()) > 100  # RGB 0..255, as the unit takes it


def test_every_unit_runs_its_planned_layers_as_int8_kernels(tracking_model, int8_bundle) -> None:
    """Counted in each artifact as its runtime sees it, against the Linear/Conv layers each unit's plan holds."""
    out, manifest = int8_bundle
    assert read_manifest(out)["artifacts"] == manifest["artifacts"]
    calibration = manifest["quant"]["calibration"]
    assert calibration["source"] == "bikes.mp4 (held out: bigbuckbunny.mp4)" and calibration["frames"] == 16
    assert (calibration["used"], calibration["skipped"]) == (20, 0)  # 16 + 4 held out, streamed
    modules = {unit.name: unit.module for unit in tracking_model.deploy_units()}
    assert sorted((a["unit"], a["target"]) for a in manifest["artifacts"]) == sorted(
        (u, t) for u in UNIT_NAMES for t in TARGETS
    )
    for art in manifest["artifacts"]:
        name, target, path = art["unit"], art["target"], out / art["path"]
        assert art["precision"] == "int8"
        for output, parity in art["parity"].items():
            assert float(parity["sqnr_db"]) >= art["min_sqnr_db"], f"{name}.{output} on {target}"
        plan = QuantPlan.from_json((out / manifest["quant"]["units"][name]["plan"]).read_text())
        assert set(plan.summary()["weight_bits"]) == {"8"}
        kinds = Counter(lq.kind for lq in plan.layers.values())
        assert kinds["linear"] > 0 and set(kinds) <= {"linear", "conv2d", "matmul"}, kinds  # matmul: Q·Kᵀ, A·V
        module = modules[name]
        if target == "onnx":
            kernels = optimized_op_counts(path)
            assert sum(kernels[op] for op in ORT_INT8_OPS) == kinds.total(), f"{name}: {kernels}"
            # Convs with an output grid (all but patch embeddings) run as QLinearConv, the others as integer GEMMs
            # over their patches. A DequantizeLinear left is a QLinearConv's int8 output read by float ops.
            graded = sum(lq.output is not None for lq in plan.layers.values())
            assert (kernels["QGemm"], kernels["QLinearConv"], kernels["ConvInteger"]) == (kinds["linear"], graded, 0)
            assert kernels["DequantizeLinear"] <= graded
        elif target == "executorch":
            # XNNPACK's dynamically quantized conv declines convs with one input channel per group (documented
            # in converters.quant_lowering.gemm_plan): those stay float, every other planned layer is a qd8 GEMM.
            one_channel = sum(
                lq.kind == "conv2d" and module.get_submodule(n).in_channels // module.get_submodule(n).groups == 1
                for n, lq in plan.layers.items()
            )
            gemms = xnnpack_gemms(path)
            qd8 = sum(n for (_, weight, x), n in gemms.items() if (weight, x) == ("qcint8", "qdint8"))
            assert qd8 == kinds.total() - kinds["matmul"] - one_channel, f"{name}: {gemms}"  # no int8 bmm
        else:
            # LiteRT's dynamic-range mode also quantizes large weights the plan leaves float (the decoder's
            # transposed convs): at least every planned layer reads an int8 weight.
            ops = litert_gemms(path)
            int8 = sum(n for (op, dtype), n in ops.items() if dtype == "int8" and op != "TRANSPOSE_CONV")
            assert int8 >= kinds.total() - kinds["matmul"], f"{name}: {ops}"  # attention stays float
            assert ops[("FULLY_CONNECTED", "int8")] >= kinds["linear"]


@pytest.mark.parametrize("target", TARGETS)
def test_int8_tracker_agrees_with_fp32_on_a_clip_it_was_not_calibrated_on(tracking_model, int8_bundle, target) -> None:
    """Calibrated on bikes.mp4, judged on bigbuckbunny.mp4 against the eager fp32 tracker."""
    out, _ = int8_bundle
    frames = list(read_frames(sample_video("bigbuckbunny"), FRAMES))
    prompt = Prompt(points=((640.0, 360.0),), labels=(1,))
    fp32 = list(eager_tracker(tracking_model).track(frames, prompt, num_frames=FRAMES))
    tracker, _ = bundle_tracker(out, target)
    int8 = list(tracker.track(frames, prompt, num_frames=FRAMES))
    areas = [float(r.mask.mean()) for r in fp32]
    assert all(0.05 < a < 0.95 for a in areas), f"fp32 masks are trivial: {areas}"
    assert all(0.05 < float(r.mask.mean()) < 0.95 for r in int8)
    ious = [mask_iou(f.mask, q.mask) for f, q in zip(fp32, int8, strict=True)]
    sqnrs = [sqnr(f.mask_logits, q.mask_logits) for f, q in zip(fp32, int8, strict=True)]
    print(f"{target}: IoU {[round(i, 3) for i in ious]}, logit SQNR dB {[round(float(x), 1) for x in sqnrs]}")
    # Measured (executorch): IoU 0.972-0.989, logit SQNR 28-33 dB per frame. An fp32 artifact agrees at
    # > 40 dB (tests/test_bundle.py), so the upper bound shows the int8 kernels really ran.
    assert float(np.mean(ious)) >= 0.95 and min(ious) >= 0.9, f"IoU per frame {ious}"
    assert 22.0 <= min(sqnrs) and max(sqnrs) < 45.0, f"logit SQNR per frame {sqnrs}"


TINY_VIT = ["--model", "vit", "--variant", "ti16_224", "--set", "depth=2", "--set", "img_size=64"]


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.argv", ["edgevit", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_convert_quant_writes_a_quantized_bundle(monkeypatch, capsys, tmp_path) -> None:
    out = tmp_path / "bundle"
    code, stdout, err = _cli(
        monkeypatch, capsys, "convert", *TINY_VIT, "--target", "onnx", "--quant", "mptq", "--out", str(out), "--json"
    )
    assert code == 0, err
    manifest = json.loads(stdout)
    assert manifest["quant"]["method"] == "mptq" and manifest["quant"]["bits"] == "8"
    (art,) = manifest["artifacts"]
    assert art["precision"] == "int8" and (out / art["path"]).exists()
    assert manifest["quant"]["units"]["model"]["summary"]["smoothed_layers"] > 0


def test_qhyvit_through_the_quantize_pipeline(tmp_path) -> None:
    """Q-HyViT as `edgevit quantize --method qhyvit` runs it, on a small ViT (no bridges: scale search and
    layer-wise learned rounding). Bridges are tested in tests/quant/test_qhyvit.py; a random or trained-like
    tiny hybrid is chaotic enough that its int8 artifacts sit under the 25 dB parity floor (18 dB, while the
    trained digits student lowers at 35-38 dB), so it is no fixture for the lowering."""
    tiny = {"depth": 2, "img_size": 64, "num_classes": 10}
    recipe = Recipe(
        "vit", "ti16_224", overrides=tiny, passes=(QuantConfig("qhyvit", recon_iters=10),), targets=("onnx",)
    )
    manifest = run(recipe, out=tmp_path / "bundle")
    metadata = manifest["quant"]["units"]["model"]["metadata"]
    assert metadata["method"] == "qhyvit" and metadata["bridges"] == []
    plan = QuantPlan.from_json((tmp_path / "bundle" / manifest["quant"]["units"]["model"]["plan"]).read_text())
    assert {layer.method for layer in plan.layers.values()} == {"qhyvit"}
    # no blocks declared: every planned layer is its own reconstruction unit (layer-wise learned rounding)
    assert metadata["reconstruction"]["iters"] == 10 and len(metadata["reconstruction"]["units"]) == len(plan.layers)
    (art,) = manifest["artifacts"]
    assert float(art["parity"]["logits"]["sqnr_db"]) >= art["min_sqnr_db"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bits", "4"], "--bits only apply with --quant ptq|qhyvit|mptq"),
        (["--quant", "ptq", "--precision", "fp16"], "--precision sets float artifacts"),
        (["--quant", "qhyvit", "--bits", "mixed"], "--method qhyvit plans one bit-width for every layer"),
        (["--quant", "awq"], "unknown method 'awq'; valid: ptq, qhyvit, mptq"),
    ],
)
def test_convert_quant_flag_errors(monkeypatch, capsys, tmp_path, args, message) -> None:
    out = tmp_path / "bundle"
    code, _, err = _cli(monkeypatch, capsys, "convert", *TINY_VIT, "--target", "onnx", *args, "--out", str(out))
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not out.exists()
