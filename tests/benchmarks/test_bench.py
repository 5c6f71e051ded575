"""`edgevit bench` on a real tiny bundle (ViT-Ti cut to one block at 32 px; onnx, tflite and Core ML): every
field present and sane, Core ML said to be not run here, a tampered artifact refused in one line."""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.bench_fidelity import compare
from benchmarks.energy import find_meters
from edgevit.bundle import write_bundle
from edgevit.models import create
from tests.test_cli import run


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("bench") / "bundle"
    write_bundle(create("vit_ti16_224", depth=1, img_size=32, num_classes=10), ("onnx", "tflite", "coreml"), None, out)
    return out


@pytest.fixture(scope="module")
def results(bundle, tmp_path_factory) -> tuple[dict, str, Path]:
    """One bench run through the CLI in-process (module-wide: it starts a child interpreter per artifact)."""
    out = tmp_path_factory.mktemp("results") / "results.json"
    with pytest.MonkeyPatch.context() as mp:
        capsys = _Capture()
        code, stdout, _ = run(mp, capsys, "bench", str(bundle), "--runs", "5", "--warmup", "1", "--threads", "1",
                              "--json", "--out", str(out))  # fmt: skip
    assert code == 0
    return json.loads(stdout), stdout, out


class _Capture:
    """capsys for a module-scoped fixture: stdout/stderr captured around the in-process CLI call."""

    def __init__(self) -> None:
        import contextlib
        import io

        self.out, self.err = io.StringIO(), io.StringIO()
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(self.out))
        self._stack.enter_context(contextlib.redirect_stderr(self.err))

    def readouterr(self) -> tuple[str, str]:
        self._stack.close()
        return self.out.getvalue(), self.err.getvalue()


def rows_by_target(results: dict) -> dict[str, dict]:
    return {row["target"]: row for row in results["rows"]}


def test_every_runnable_artifact_has_every_figure(results):
    data, stdout, out = results
    assert out.read_text() == stdout  # --out holds what --json printed
    assert data["schema"] == "edgevit.bench" and data["schema_version"] == 1 and data["device"] == "local"
    assert data["bundle"]["model"] == "vit" and data["machine"]["cores_available"] >= 1
    for target in ("onnx", "tflite"):
        row = rows_by_target(data)[target]
        assert row["status"] == "ok" and row["threads"] == 1
        lat = row["latency"]
        assert lat["n"] == 5 and len(lat["samples_ms"]) == 5
        assert 0 < lat["min_ms"] <= lat["median_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        assert lat["spread_pct"] >= 0 and row["throughput_per_s"] == pytest.approx(1e3 / lat["median_ms"])
        assert row["load_seconds"] > 0 and row["first_load_seconds"] > 0 and row["size_bytes"] > 0
        memory = row["memory"]
        assert memory["peak_bytes"] >= memory["baseline_bytes"] > 50e6  # a Python with torch imported
        assert memory["added_bytes"] == memory["peak_bytes"] - memory["baseline_bytes"]
        assert min(row["parity_vs_eager_db"].values()) > 60


def test_fidelity_is_against_the_fp32_reference_artifact(results):
    rows = rows_by_target(results[0])
    assert rows["onnx"]["fidelity"] == {"note": "reference (fp32)", "reference": "model/onnx/fp32"}
    tflite = rows["tflite"]["fidelity"]
    assert tflite["reference"] == "model/onnx/fp32" and tflite["inputs"] == 8
    assert tflite["min_sqnr_db"] > 60 and tflite["top1_agreement"] == 1.0
    assert "photo" in results[0]["inputs"]


def test_core_ml_is_not_run_here_and_has_no_figure(results):
    if platform.system() == "Darwin":
        pytest.skip("Core ML runs on macOS")
    row = rows_by_target(results[0])["coreml"]
    assert row["status"] == "not run" and row["reason"] == "not run here (needs macOS)"
    assert "latency" not in row and "memory" not in row and row["fidelity"] == {"note": "not run here (needs macOS)"}


def test_energy_and_overhead_are_stated(results):
    data = results[0]
    meters, why = find_meters(Path("/sys"))
    if meters:
        assert data["energy"]["measured"] is True
    else:
        assert data["energy"] == {"measured": False, "reason": why} and why.startswith("not measured")
        assert all(r["energy"]["measured"] is False for r in data["rows"] if r["status"] == "ok")
    over = data["overhead"]
    assert over["measured"] and over["model_median_ms"] > 0 and over["in_sample_us"] > 0
    assert "MatMul" in over["model"] and "%" in over["summary"]


def test_a_tampered_artifact_is_refused_in_one_line(bundle, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    onnx = next((copy / "onnx").glob("*.onnx"))
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the sha256 can tell
    onnx.write_bytes(bytes(data))
    out = tmp_path / "results.json"
    code, _, err = run(monkeypatch, capsys, "bench", str(copy), "--runs", "1", "--out", str(out))
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "sha256" in err, err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--target", "tensorrt"], "unknown target 'tensorrt'"), (["--target", "executorch"], "has no executorch")],
)
def test_bad_target_is_one_line(bundle, monkeypatch, capsys, args, message):
    code, _, err = run(monkeypatch, capsys, "bench", str(bundle), *args)
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_top1_agreement_counts_argmax_matches():
    ref = [(np.array([[0.0, 1.0, 0.0]]),), (np.array([[2.0, 1.0, 0.0]]),)]
    test = [(np.array([[0.0, 0.9, 0.1]]),), (np.array([[0.0, 1.0, 2.0]]),)]
    figures = compare(ref, test, ["logits"], "classification")
    assert figures["top1_agreement"] == 0.5
    assert "top1_agreement" not in compare(ref, test, ["features"], "features")
