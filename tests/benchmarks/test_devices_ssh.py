"""The ssh device against a REAL OpenSSH server on loopback whose sessions run a second venv (numpy +
onnxruntime only, no torch, no edgevit) as the board: rows and outputs match a local bench of the same bundle,
the machine is the board's, a missing runtime / unreachable host / killed server are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.bench import BenchSettings
from benchmarks.devices import DeviceError, DeviceLost, open_device, seeded_inputs
from converters.bundle import read_manifest
from converters.runtime import load_runner
from edgevit.bundle import write_bundle
from edgevit.models import create
from tests.benchmarks.sshd import SSHD, make_board, start_sshd
from tests.test_cli import run

SETTINGS = BenchSettings(runs=5, warmup=1, threads=1)


@pytest.fixture(scope="session")
def board(tmp_path_factory) -> Path:
    """The board's venv, made once per session (about 10 s from the local pip cache)."""
    path = tmp_path_factory.mktemp("board") / "venv"
    seconds = make_board(path)
    print(f"board venv made in {seconds:.1f} s")
    return path


@pytest.fixture(scope="module")
def sshd(board, tmp_path_factory):
    if not SSHD.exists():
        pytest.fail(f"{SSHD} is missing: the ssh device is tested against a real OpenSSH server (apt openssh-server)")
    server = start_sshd(tmp_path_factory.mktemp("sshd"), board)
    yield server
    server.kill()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("sshbench") / "bundle"
    write_bundle(create("vit_ti16_224", depth=1, img_size=32, num_classes=10), ("onnx", "tflite"), None, out)
    return out


def device_of(server, **options):
    return open_device(f"ssh:127.0.0.1:{server.port}", ssh_config=server.client_config,
                       python=str(server.board / "bin" / "python3"), **options)  # fmt: skip


def test_outputs_on_the_board_match_onnxruntime_here(sshd, bundle, tmp_path):
    device = device_of(sshd)
    manifest = read_manifest(bundle)
    index, art = next((i, a) for i, a in enumerate(manifest["artifacts"]) if a["target"] == "onnx")
    per_unit, _ = seeded_inputs(manifest)
    replies = device.run_remote(bundle, [(index, art)], per_unit, SETTINGS, tmp_path, None)
    remote = replies[index]["outputs"]
    here = load_runner("onnx", bundle / art["path"], 1)
    assert len(remote) == len(per_unit["model"]) == 8
    for xs, got in zip(per_unit["model"], remote, strict=True):
        np.testing.assert_allclose(got[0], here.run(*xs)[0], rtol=1e-5, atol=1e-6)
    assert replies[index]["pid"] > 0 and len(replies[index]["samples_s"]) == SETTINGS.runs
    assert not list((sshd.client_config.parent / "remote-tmp").glob("edgevit-bench.*"))  # the board's copy is gone


def test_cli_bench_on_ssh_matches_a_local_bench(sshd, bundle, monkeypatch, capsys):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    code, out, err = run(monkeypatch, capsys, "bench", str(bundle), "--runs", "5", "--warmup", "1", "--threads", "1",
                         "--json")  # fmt: skip
    assert code == 0, err
    local = json.loads(out)
    monkeypatch.setenv("EDGEVIT_SSH_CONFIG", str(sshd.client_config))
    monkeypatch.setenv("EDGEVIT_SSH_PYTHON", str(sshd.board / "bin" / "python3"))
    spec = f"ssh:127.0.0.1:{sshd.port}"
    code, out, err = run(monkeypatch, capsys, "bench", str(bundle), "--runs", "5", "--warmup", "1", "--threads", "1",
                         "--json", "--device", spec)  # fmt: skip
    assert code == 0, err
    remote = json.loads(out)
    assert remote["device"] == spec and local["device"] == "local" and remote["schema"] == "edgevit.bench"
    assert remote["inputs"] == local["inputs"] and "photo" in remote["inputs"]  # the same photos on both
    # the machine is described by the board: its Python has no torch, the local one has
    assert remote["machine"]["versions"]["torch"] == "not installed" != local["machine"]["versions"]["torch"]
    assert remote["machine"]["versions"]["onnxruntime"] == local["machine"]["versions"]["onnxruntime"]
    assert "through " + spec in remote["device_note"] and remote["machine"]["emulated"] is None
    rows = {r["target"]: r for r in remote["rows"]}
    onnx, local_onnx = rows["onnx"], next(r for r in local["rows"] if r["target"] == "onnx")
    assert onnx["status"] == "ok" and onnx["latency"]["n"] == 5 and onnx["threads"] == 1
    assert onnx["memory"]["peak_bytes"] > onnx["memory"]["baseline_bytes"] > 0
    assert onnx["fidelity"] == local_onnx["fidelity"] == {"note": "reference (fp32)", "reference": "model/onnx/fp32"}
    assert onnx["parity_vs_eager_db"] == local_onnx["parity_vs_eager_db"] and onnx["size_bytes"] > 0
    assert rows["tflite"]["status"] == "not run" and "ai-edge-litert does not import there" in rows["tflite"]["reason"]
    assert remote["energy"]["measured"] is False


def test_a_runtime_missing_on_the_board_is_one_line(sshd, bundle, monkeypatch, capsys):
    monkeypatch.setenv("EDGEVIT_SSH_CONFIG", str(sshd.client_config))
    monkeypatch.setenv("EDGEVIT_SSH_PYTHON", str(sshd.board / "bin" / "python3"))
    code, _, err = run(monkeypatch, capsys, "bench", str(bundle), "--target", "tflite",
                       "--device", f"ssh:127.0.0.1:{sshd.port}")  # fmt: skip
    assert code == 2 and len(err.splitlines()) == 1 and "has no runtime for tflite" in err, err


def test_an_unreachable_host_is_one_line(sshd, bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGEVIT_SSH_CONFIG", str(sshd.client_config))
    out = tmp_path / "r.json"
    code, _, err = run(monkeypatch, capsys, "bench", str(bundle), "--device", "ssh:127.0.0.1:1", "--out", str(out))
    assert code == 2 and len(err.splitlines()) == 1 and "unreachable over ssh" in err, err
    assert not out.exists()


def test_a_server_killed_mid_run_is_device_lost(board, bundle, tmp_path):
    server = start_sshd(tmp_path, board)
    device = device_of(server)
    seen = []

    def progress(label: str, done: int, total: int) -> None:
        seen.append(done)
        if done == 3:
            server.kill()

    try:
        with pytest.raises(DeviceLost, match=r"lost while benching model · onnx fp32") as err:
            device.bench(bundle, BenchSettings(runs=200000, warmup=0, threads=1, targets=("onnx",)), progress)
    finally:
        server.kill()
    assert isinstance(err.value, DeviceError) and "\n" not in str(err.value) and 3 in seen and max(seen) < 200000
