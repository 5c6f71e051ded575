"""`edgevit quantize` end to end on a small ViT (real photos, every target), and its one-line refusals."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from converters import ConversionError
from edgevit.bundle import read_manifest
from edgevit.commands.quantize import quantize
from edgevit.errors import EdgevitError
from quant.errors import QuantError
from quant.plan import QuantPlan

TINY = ["depth=2", "img_size=64", "num_classes=10"]  # ViT-Ti/16 blocks at 64 px: 4x4 patches, 1.03 M weights


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def run(
    tmp_path: Path,
    capsys,
    *,
    method="ptq",
    bits="8",
    budget=None,
    calib="builtin",
    target="all",
    explain=False,
    overrides=TINY,
) -> tuple[dict, str]:
    out = tmp_path / "bundle"
    quantize("vit", "ti16_224", None, overrides, method, bits, budget, calib, target, explain, out, False, True)
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def test_ptq_int8_bundle_for_every_target(tmp_path, capsys) -> None:
    manifest, err = run(tmp_path, capsys)
    out = tmp_path / "bundle"
    assert read_manifest(out)["artifacts"] == manifest["artifacts"]
    arts = {a["target"]: a for a in manifest["artifacts"]}
    assert sorted(arts) == ["coreml", "executorch", "onnx", "tflite"]
    for target, art in arts.items():
        assert art["precision"] == ("w8a8" if target == "coreml" else "int8") and (out / art["path"]).exists()
        quant = art["facts"]["quant"]
        if target == "coreml":
            assert art["parity"] is None and quant["weight_bits_held"]["linear"] == {"int8": 9}
            assert quant["activation_quantization"]["quantized_gemm_inputs"] == {"conv": 1, "linear": 9}
        else:
            assert float(art["parity"]["logits"]["sqnr_db"]) >= art["min_sqnr_db"]
            assert quant["parity_vs_fp32"]["logits"]["sqnr_db"] > 20.0
    info = manifest["quant"]
    assert (info["method"], info["bits"], info["skipped_targets"]) == ("ptq", "8", {})
    assert info["calibration"] == {"source": "builtin", "images": 17, "held_out_for_parity": 4}
    plan = QuantPlan.from_json((out / info["units"]["model"]["plan"]).read_text())
    assert info["units"]["model"]["summary"] == plan.summary() and plan.summary()["weight_bits"] == {"8": 10}
    assert "lowering model → onnx" in err
    json.dumps(manifest, allow_nan=False)


def test_mptq_mixed_precision_for_coreml(tmp_path, capsys) -> None:
    manifest, err = run(tmp_path, capsys, method="mptq", bits="mixed", budget=0.75, target="coreml", explain=True)
    assert "output SQNR (dB) with one layer quantized" in err
    (art,) = manifest["artifacts"]
    summary = manifest["quant"]["units"]["model"]["summary"]
    planned = summary["weight_bits"]  # e.g. {"4": 3, "6": 2, "8": 5}
    assert summary["weight_bytes"] <= 0.75e6 and summary["smoothed_layers"] > 0 and len(planned) > 1
    assert art["precision"] == f"w{'-'.join(sorted(planned, key=int))}a8"
    assert art["facts"]["minimum_deployment_target"] == "iOS18"
    held = Counter()
    for kind in art["facts"]["quant"]["weight_bits_held"].values():
        held.update(kind)
    assert held == Counter({{"4": "int4", "6": "palettized6", "8": "int8"}[b]: n for b, n in planned.items()})


def _folder(tmp_path: Path, good: int, broken: int) -> str:
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(good):
        Image.fromarray(np.full((40, 50, 3), 30 * i, np.uint8)).save(folder / f"{i}.png")
    for i in range(broken):
        (folder / f"broken{i}.png").write_bytes(b"not a png")
    return str(folder)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"bits": "4", "target": "onnx"}, EdgevitError, "cannot hold 4-bit weights: onnx holds 8-bit weights"),
        ({"bits": "6", "target": "tflite"}, EdgevitError, "coreml holds 4/6/8-bit weights and 8-bit activations"),
        ({"bits": "mixed"}, EdgevitError, "--bits mixed needs --budget-mb"),
        ({"bits": "mixed", "budget": 1.0, "target": "tflite"}, EdgevitError, "more than one weight width"),
        ({"bits": "mixed", "budget": 0.01, "target": "coreml"}, QuantError, "weight budget 0.01 MB cannot be met"),
        ({"bits": "8", "budget": 0.5}, QuantError, "the W8 plan holds 1.03 MB of quantized weights, over the 0.5"),
        ({"method": "gptq"}, EdgevitError, "unknown method 'gptq'; valid: ptq, qhyvit, mptq"),
        ({"calib": "nowhere/"}, EdgevitError, "calibration source 'nowhere/' does not exist"),
        ({"calib": "EMPTY"}, EdgevitError, "gave 0 image(s); calibration needs at least 10"),
        ({"calib": "FEW"}, EdgevitError, "gave 3 image(s) (1 unreadable, e.g. broken0.png); calibration needs"),
        ({"overrides": ["depth=2", "width=3"]}, EdgevitError, "vit has no config field(s) ['width']"),
        ({"overrides": ["depth"]}, EdgevitError, "--set 'depth' is not KEY=VALUE"),
    ],
)
def test_bad_requests_fail_in_one_line_and_write_nothing(tmp_path, capsys, kwargs, error, message) -> None:
    if kwargs.get("calib") == "EMPTY":
        kwargs["calib"] = _folder(tmp_path, 0, 0)
    elif kwargs.get("calib") == "FEW":
        kwargs["calib"] = _folder(tmp_path, 3, 1)
    with pytest.raises(error) as info:
        run(tmp_path, capsys, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "bundle").exists()
    assert not isinstance(info.value, ConversionError)
