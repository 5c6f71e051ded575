"""Mixed precision under a real budget: bytes read back from the written artifact, `--explain` naming each
layer's bits, and the one-line refusals of `--budget-ms` / `--device` before anything is written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from edgevit.commands.quantize import quantize
from quant.cost import weight_bytes
from quant.plan import QuantPlan
from tests.test_cli import run as cli

RANDOM_NOTE = "note: no --checkpoint: these weights are RANDOM (files are valid, outputs meaningless)"
TINY = ["depth=2", "img_size=64", "num_classes=10"]  # ViT-Ti/16 blocks at 64 px: 1.03 M weights


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def _quantize(tmp_path: Path, capsys, bits: str, budget: float | None, target: str) -> tuple[dict, str, QuantPlan]:
    out = tmp_path / "bundle"
    quantize("vit", "ti16_224", None, TINY, "ptq", bits, budget, "builtin", target, True, out, False, True)
    captured = capsys.readouterr()
    manifest = json.loads(captured.out)
    plan = QuantPlan.from_json((out / manifest["quant"]["units"]["model"]["plan"]).read_text())
    return manifest, captured.err, plan


def test_mixed_budget_holds_in_the_written_onnx_file(tmp_path, capsys) -> None:
    budget_mb = 0.75
    manifest, err, plan = _quantize(tmp_path, capsys, "mixed", budget_mb, "onnx")
    (art,) = manifest["artifacts"]
    quant = art["facts"]["quant"]
    bits = plan.summary()["weight_bits"]
    assert set(bits) == {"4", "8"} and quant["ort_int8_kernels"]["MatMulNBits"] == bits["4"]
    # The bytes read back from the written file are the bytes the plan was held to, within the budget; the old
    # cost (the packed payload alone) counted far less, and a plan filled to it would overrun the budget.
    assert quant["weight_bytes_written"] == quant["weight_bytes_planned"] <= budget_mb * 1e6
    assert plan.weight_bytes() < 0.9 * quant["weight_bytes_written"]
    allocation = plan.metadata["allocation"]
    assert allocation["budgets"][0]["used"] == quant["weight_bytes_planned"]
    # --explain names every layer's bits, its sensitivity and why, with the budget and what was used.
    assert "the plan's choice" in err and f"weight budget {budget_mb:g} MB, used" in err
    for name, got in allocation["layers"].items():
        assert re.search(rf"{re.escape(name)}\s*│\s*W{got['weight_bits']}A{got['act_bits']}\s*│", err), name
        assert got["why"] and got["cost"]["weight"] == weight_bytes(plan[name], "onnx")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--bits", "mixed", "--budget-ms", "5"], "--budget-ms needs --device"),
        (["--bits", "mixed", "--budget-ms", "-1", "--device", "local"], "--budget-ms must be a positive number"),
        (["--bits", "8", "--budget-ms", "5", "--device", "local"], "use --bits mixed without --budget-mb"),
        (["--bits", "mixed", "--device", "local", "--budget-mb", "1"], "--device is where --budget-ms is measured"),
        (["--bits", "mixed", "--budget-ms", "5", "--device", "tpu:x"], "unknown device kind 'tpu'"),
        (["--bits", "mixed", "--budget-ms", "5", "--device", "local", "--target", "all"], "give one --target"),
        (["--bits", "mixed", "--budget-mb", "0.01", "--target", "coreml"], "smallest reachable weight size"),
    ],
)
def test_bad_budget_flags_one_line_nothing_written(monkeypatch, capsys, tmp_path, flags, message) -> None:
    out = tmp_path / "bundle"
    args = ["quantize", "--model", "vit", "--variant", "ti16_224", *[f"--set={s}" for s in TINY], "--out", str(out)]
    code, _, err = cli(monkeypatch, capsys, *args, *flags)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    rest = " ".join(err.replace(lines[0], "").split())  # besides the error, only the random-weights note
    assert rest in ("", RANDOM_NOTE), err
    assert not out.exists()


def test_convert_quant_takes_the_same_budget_flags(monkeypatch, capsys, tmp_path) -> None:
    out = tmp_path / "bundle"
    args = ["convert", "--model", "vit", "--variant", "ti16_224", "--out", str(out), "--target", "onnx"]
    code, _, err = cli(monkeypatch, capsys, *args, "--quant", "ptq", "--bits", "mixed", "--budget-ms", "5")
    assert (
        code == 2
        and err.strip() == "error: --budget-ms needs --device: where to measure it (local, ssh:HOST, adb:SERIAL)"
    )
    code, _, err = cli(monkeypatch, capsys, *args, "--explain")
    assert code == 2 and err.strip().startswith("error: --explain only apply with --quant")
    assert not out.exists()
