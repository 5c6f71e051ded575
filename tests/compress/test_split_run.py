"""ED-ViT end to end on a tiny ViT trained on the digits: split into exported ONNX sub-models, serve each from its
own `edgevit serve` process on loopback, fan out, fuse; a slow and a killed server; the CLI's bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edgevit.compress.split import (
    Device,
    DistillSettings,
    FusionSpec,
    SplitClient,
    SplitSettings,
    split_classifier,
)
from edgevit.compress.split.fusion import fuse_scores
from edgevit.data.labelled import load_labelled
from edgevit.errors import EdgevitError
from edgevit.models import create
from edgevit.training.distill import TrainConfig, predict, train
from tests.test_cli import run

ARCH = {
    "img_size": 16,
    "patch_size": 4,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 4,
    "num_classes": 10,
    "global_pool": "avg",
}
SETS = [f"--set={k}={v}" for k, v in ARCH.items()]
READY = re.compile(r"serving .* on 127\.0\.0\.1:(\d+);")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny ViT trained for a few seconds on the digits (seeded; about 76 % held-out), and its checkpoint."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create("vit", "ti16_224", **ARCH)
    data = load_labelled("builtin", model.spec)
    train(
        model,
        data.train.images,
        data.train.labels,
        TrainConfig(epochs=8, batch_size=32, lr=3e-3),
        seed=0,
        progress=False,
    )
    path = tmp_path_factory.mktemp("vit") / "vit_digits.pt"
    torch.save({"model": model.state_dict()}, path)
    return model, data, path


@pytest.fixture(scope="module")
def split(trained, tmp_path_factory):
    model, data, path = trained
    out = tmp_path_factory.mktemp("split") / "out"
    devices = [Device("a", 1.0), Device("b", 0.5)]
    settings = SplitSettings(0.4, DistillSettings(epochs=2), seed=0, targets=("onnx",))
    return split_classifier(model, data, devices, settings, out, checkpoint=path), out


@pytest.fixture(scope="module")
def servers(split, tmp_path_factory):
    """One `edgevit serve` subprocess per device, on a free loopback port each: name → (process, address)."""
    result, out = split
    logs = tmp_path_factory.mktemp("logs")
    started = {}
    for device in result.spec.devices:
        log = logs / f"{device.name}.err"
        command = [sys.executable, "-m", "edgevit.cli", "serve", str(out / device.bundle), "--port", "0"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        with log.open("w") as err:
            started[device.name] = (subprocess.Popen(command, stderr=err, stdout=subprocess.DEVNULL, env=env), log)
    found = {}
    try:
        for name, (proc, log) in started.items():
            found[name] = (proc, f"127.0.0.1:{_port(proc, log)}")
        yield found
    finally:
        for proc, _ in started.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
            proc.wait(timeout=30)


def _port(proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = READY.search(log.read_text())
        if match:
            return int(match[1])
        if proc.poll() is not None:
            pytest.fail(f"edgevit serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    pytest.fail(f"edgevit serve did not start within {timeout} s: {log.read_text()[-2000:]}")


def _wait_stopped(pid: int, timeout: float = 10.0) -> None:
    """kill() returns before the kernel has stopped the process: wait until /proc says it is stopped (T)."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "T":
        if time.monotonic() > deadline:
            pytest.fail(f"process {pid} did not stop within {timeout} s")
        time.sleep(0.01)


def _addresses(servers) -> dict[str, str]:
    return {name: address for name, (_, address) in servers.items()}


def test_split_writes_pinned_bundles_of_pruned_sub_models_and_keeps_accuracy(split, trained):
    result, out = split
    spec = FusionSpec.read(out)
    assert spec == result.spec
    assert [list(d.classes) for d in spec.devices] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    for device, sub in zip(spec.devices, result.results, strict=True):
        manifest = json.loads((out / device.bundle / "manifest.json").read_text())
        assert [p["kind"] for p in manifest["passes"]] == ["prune", "split"]
        assert manifest["artifacts"][0]["outputs"][0]["shape"] == [1, len(device.classes) + 1]
        assert device.weights_bytes == 4 * sum(p.numel() for p in sub.module.parameters())
        assert device.weights_bytes <= device.memory_mb * 2**20
    metrics = spec.metrics
    assert max(metrics["sub_parameters"].values()) < 0.7 * metrics["full_parameters"]
    assert metrics["full_accuracy"] > 0.6  # ten classes: chance is 0.1
    assert metrics["fused_accuracy"] > metrics["full_accuracy"] - 0.2


def test_served_onnx_sub_models_fuse_like_the_eager_ones(split, trained, servers):
    result, _ = split
    _, data, _ = trained
    images = data.test.images[:6]
    eager = fuse_scores(result.spec, {r.device.name: predict(r.module, images).numpy() for r in result.results})
    with SplitClient(result.spec, _addresses(servers), deadline_s=10.0) as client:
        for image, expected in zip(images, eager, strict=True):
            prediction = client.predict(image[None].numpy())
            assert not prediction.partial
            np.testing.assert_allclose(prediction.probabilities, expected, atol=1e-4)
            assert prediction.label == int(expected.argmax())


def test_split_infer_cli_prints_the_fused_prediction(split, servers, monkeypatch, capsys, tmp_path):
    from PIL import Image

    result, out = split
    digit = tmp_path / "digit.png"
    Image.fromarray(np.kron(np.eye(8, dtype=np.uint8) * 255, np.ones((2, 2), dtype=np.uint8))).save(digit)
    flags = [f"--address={name}={address}" for name, address in _addresses(servers).items()]
    code, stdout, stderr = run(monkeypatch, capsys, "split-infer", str(out), str(digit), *flags, "--json")
    assert (code, stderr) == (0, "")
    [answer] = json.loads(stdout)
    assert answer["partial"] is False and answer["class"] in result.spec.classes
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


def test_a_server_from_another_split_is_refused(split, trained, servers):
    result, _ = split
    other = dataclasses.replace(result.spec.devices[0], manifest_sha256="f" * 64)
    spec = dataclasses.replace(result.spec, devices=(other, *result.spec.devices[1:]))
    with SplitClient(spec, _addresses(servers), deadline_s=10.0) as client:
        with pytest.raises(EdgevitError, match="serves a bundle the fusion spec does not pin"):
            client.predict(trained[1].test.images[:1].numpy())


def test_a_slow_then_a_killed_server_gives_partial_predictions(split, trained, servers):
    """Runs last among the server tests: it stops, then kills, device b's server."""
    result, _ = split
    images = trained[1].test.images[:4]
    proc_b = servers["b"][0]
    b_classes = list(result.spec.device("b").classes)
    with SplitClient(result.spec, _addresses(servers), deadline_s=1.5) as client:
        assert not client.predict(images[:1].numpy()).partial
        os.kill(proc_b.pid, signal.SIGSTOP)  # alive but never answers: the deadline cuts it off
        _wait_stopped(proc_b.pid)
        try:
            slow = client.predict(images[1:2].numpy())
        finally:
            os.kill(proc_b.pid, signal.SIGCONT)
        assert slow.partial and list(slow.missing) == ["b"] and "DEADLINE_EXCEEDED" in slow.missing["b"]
        assert slow.probabilities[b_classes].sum() == 0 and slow.label not in b_classes
        proc_b.kill()  # mid-run: the next frames come from device a alone
        proc_b.wait(timeout=30)
        for image in images[2:]:
            gone = client.predict(image[None].numpy())
            assert gone.partial and list(gone.missing) == ["b"] and "UNAVAILABLE" in gone.missing["b"]
            assert gone.probabilities.sum() == pytest.approx(1.0)


# --- bad input: one line, exit 2, nothing written ------------------------------------------------------------


def _devices(tmp_path: Path, memories: list[float]) -> Path:
    path = tmp_path / "devices.toml"
    path.write_text("".join(f'[[devices]]\nname = "d{i}"\nmemory_mb = {m}\n' for i, m in enumerate(memories)))
    return path


def _split_cli(monkeypatch, capsys, checkpoint: Path, devices: Path, out: Path, *extra: str):
    args = ["split", "--model=vit", "--variant=ti16_224", *SETS, f"--checkpoint={checkpoint}"]
    return run(monkeypatch, capsys, *args, f"--devices={devices}", f"--out={out}", "--json", *extra)


def _assert_refused(result, message: str, tmp_path: Path, kept: set[str]) -> None:
    code, stdout, stderr = result
    assert code == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and message in stderr, stderr
    assert {p.name for p in tmp_path.iterdir()} == kept  # no output, no temporary, no lock


def test_more_devices_than_classes_is_refused(trained, monkeypatch, capsys, tmp_path):
    devices = _devices(tmp_path, [1.0] * 11)
    result = _split_cli(monkeypatch, capsys, trained[2], devices, tmp_path / "out")
    _assert_refused(result, "11 devices but only 10 classes", tmp_path, {"devices.toml"})


def test_a_budget_no_sub_model_fits_says_what_would(trained, monkeypatch, capsys, tmp_path):
    devices = _devices(tmp_path, [1.0, 0.05])
    result = _split_cli(monkeypatch, capsys, trained[2], devices, tmp_path / "out", "--epochs=1")
    _assert_refused(
        result, "the largest device left, 'd1', has memory_mb = 0.05; give it memory_mb >=", tmp_path, {"devices.toml"}
    )


def test_an_empty_or_missing_class_folder_is_refused(trained, monkeypatch, capsys, tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    for name in ("cat", "dog"):
        (data / name).mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(data / "cat" / f"{i}.png")
    devices = _devices(tmp_path, [1.0, 1.0])
    result = _split_cli(monkeypatch, capsys, trained[2], devices, tmp_path / "out", f"--data={data}")
    _assert_refused(result, "holds 0 image(s)", tmp_path, {"devices.toml", "data"})
    result = _split_cli(monkeypatch, capsys, trained[2], devices, tmp_path / "out", f"--data={tmp_path / 'nope'}")
    _assert_refused(result, "is not a folder", tmp_path, {"devices.toml", "data"})


def test_a_fusion_spec_that_does_not_match_its_bundles_is_refused(split, monkeypatch, capsys, tmp_path):
    _, out = split
    copy = tmp_path / "split"
    shutil.copytree(out, copy)
    manifest = copy / "b" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"memory_mb": 0.5', '"memory_mb": 0.75'))
    before = {p.name for p in tmp_path.iterdir()}
    result = run(monkeypatch, capsys, "split-infer", str(copy), str(copy / "fusion.json"))
    _assert_refused(result, "does not match the fusion spec (device 'b'", tmp_path, before)


def test_split_needs_a_checkpoint(monkeypatch, capsys, tmp_path):
    devices = _devices(tmp_path, [1.0, 1.0])
    result = run(monkeypatch, capsys, "split", "--model=vit", f"--devices={devices}", f"--out={tmp_path / 'out'}")
    _assert_refused(result, "pass its --checkpoint", tmp_path, {"devices.toml"})


def test_a_folder_of_class_folders_splits_by_its_class_names(monkeypatch, capsys, tmp_path):
    """A user's data: one sub-folder per class (here digits 0-2 written as PNGs); the classifier is untrained,
    which is enough to show the classes, the split and the bundles follow the folder."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    data = tmp_path / "data"
    for label, name in enumerate(("zero", "one", "two")):
        (data / name).mkdir(parents=True)
        for i, index in enumerate(np.flatnonzero(digits.target == label)[:10]):
            Image.fromarray((digits.images[index] * 255 / 16).astype(np.uint8)).save(data / name / f"{i}.png")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create("vit", "ti16_224", **{**ARCH, "num_classes": 3})
    checkpoint = tmp_path / "vit3.pt"
    torch.save({"model": model.state_dict()}, checkpoint)
    devices = _devices(tmp_path, [1.0, 1.0])
    sets = ["--set=num_classes=3", "--epochs=1", f"--data={data}"]
    code, stdout, stderr = _split_cli(monkeypatch, capsys, checkpoint, devices, tmp_path / "out", *sets)
    assert (code, stderr) == (0, ""), stderr
    spec = json.loads(stdout)
    assert spec["classes"] == ["one", "two", "zero"]  # sorted folder names
    assert [d["classes"] for d in spec["devices"]] == [[0, 1], [2]]
    assert spec["metrics"]["held_out_images"] == 6  # every fifth image of each class
    assert FusionSpec.read(tmp_path / "out").classes == ("one", "two", "zero")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".edgevit-output", "d0", "d1", "fusion.json"]
