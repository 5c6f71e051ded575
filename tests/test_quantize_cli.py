"""`edgevit quantize` end to end on a small ViT (real photos, every target), and its one-line refusals."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from converters.bundle import read_manifest
from edgevit.commands.quantize import quantize
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
    assert info["calibration"] == {
        "source": "builtin",
        "images": 17,
        "held_out_for_parity": 4,
        "used": 21,
        "skipped": 0,
        "skipped_examples": [],
    }
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


RANDOM_NOTE = "note: no --checkpoint: these weights are RANDOM (files are valid, outputs meaningless)"


@pytest.mark.parametrize(
    ("flags", "message", "after_model"),
    [
        (["--bits", "6", "--target", "onnx"], "cannot hold 6-bit weights: onnx holds 4/8-bit weights", False),
        (["--bits", "6", "--target", "tflite"], "coreml holds 4/6/8-bit weights and 8-bit activations", False),
        (["--bits", "mixed"], "--bits mixed needs --budget-mb", False),
        (["--bits", "mixed", "--budget-mb", "1", "--target", "tflite"], "weight budget 1 MB cannot be met", True),
        (["--bits", "mixed", "--budget-mb", "0.01", "--target", "coreml"], "weight budget 0.01 MB cannot be met", True),
        (["--budget-mb", "0.5"], "the W8 plan holds 1.08 MB of quantized weights, over the 0.5", True),
        (["--method", "gptq"], "unknown method 'gptq'; valid: ptq, qhyvit, mptq", False),
        (["--calib", "nowhere/"], "calibration source 'nowhere/' does not exist", True),
        (["--calib", "EMPTY"], "gave 0 image(s); calibration needs at least 10", True),
        (["--calib", "FEW"], "gave 3 image(s) (1 unreadable, e.g. broken0.png); calibration needs", True),
        (["--set", "width=3"], "vit has no config field(s) ['width']", False),
        (["--set", "depth"], "--set 'depth' is not KEY=VALUE", False),
    ],
)
def test_bad_requests_fail_in_one_line_and_write_nothing(
    monkeypatch, tmp_path, capsys, flags, message, after_model
) -> None:
    """Through the command line: exit 2 and the whole stderr is the error line (after the random-weights note
    when the model was built first), no traceback, and no bundle or temporary folder left."""
    from edgevit.cli import main

    if "EMPTY" in flags or "FEW" in flags:
        folder = _folder(tmp_path, 0, 0) if "EMPTY" in flags else _folder(tmp_path, 3, 1)
        flags = [folder if f in ("EMPTY", "FEW") else f for f in flags]
    before = sorted(p.name for p in tmp_path.iterdir())
    model = ["--model", "vit", "--variant", "ti16_224", *(a for o in TINY for a in ("--set", o))]
    monkeypatch.setenv("COLUMNS", "300")  # rich wraps the note at the terminal width (80 when captured)
    monkeypatch.setattr("sys.argv", ["edgevit", "quantize", *model, *flags, "--out", str(tmp_path / "bundle")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert exit_info.value.code == 2 and err.endswith("\n"), err
    assert lines == [*([RANDOM_NOTE] if after_model else []), lines[-1]] and lines[-1].startswith("error: "), err
    assert message in lines[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no bundle, no temporary sibling
