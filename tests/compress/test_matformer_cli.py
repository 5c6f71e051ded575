"""`edgevit train` and `edgevit extract` as a user meets them: a checkpoint, a verified ONNX bundle whose artifact
computes the chosen sub-model, a recipe that replays it, and one-line errors that leave nothing behind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgevit.data.labelled import load_labelled
from edgevit.models import create
from tests.test_cli import run

TINY = {"depth": "2", "embed_dim": "32", "num_heads": "2", "img_size": "16"}
SETS = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]


def _model(**extra):
    return create("matvit", "mini_32", **{k: int(v) for k, v in TINY.items()}, **extra)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A tiny MatViT trained on the digits as `edgevit train --epochs 10` trains it, in a cache of its own."""
    from edgevit.compress.matformer import MatTrainConfig, trained

    home = tmp_path_factory.mktemp("matformer-cache")
    model = _model()
    trained(model, load_labelled("builtin", model.spec), MatTrainConfig(epochs=10), seed=0, progress=False,
            cache_dir=home / "edgevit" / "matformer")  # fmt: skip
    return home


@pytest.fixture
def checkpoint(cache, tmp_path, monkeypatch, capsys):
    """`edgevit train` (from the cache): the checkpoint it wrote and its JSON summary."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    args = ["train", "--model", "matvit", "--variant", "mini_32", *SETS, "--epochs", "10", "--json"]
    code, out, err = run(monkeypatch, capsys, *args, "--out", str(tmp_path / "m.pt"))
    assert code == 0, err
    return tmp_path / "m.pt", json.loads(out)


def test_train_writes_a_plain_checkpoint_and_the_extract_flags(checkpoint) -> None:
    path, summary = checkpoint
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = _model()
    model.load_state_dict(state["model"], strict=True)
    assert all(summary["metrics"][f"accuracy@{f:g}"] > 0.3 for f in model.cfg.granularities)
    assert summary["from_cache"] is True and summary["classes"] == [str(i) for i in range(10)]
    assert (
        "--model matvit --variant mini_32" in summary["extract_flags"] and "--set depth=2" in summary["extract_flags"]
    )


def test_extract_writes_a_verified_onnx_bundle_that_replays(checkpoint, tmp_path, monkeypatch, capsys) -> None:
    path, _ = checkpoint
    model = _model()
    model.load_state_dict(torch.load(path, weights_only=True)["model"])
    budget = (model.parameter_count(1) + model.parameter_count(2)) / 2e6
    args = ["extract", "--model", "matvit", "--variant", "mini_32", *SETS, "--checkpoint", str(path)]
    code, out, err = run(monkeypatch, capsys, *args, "--budget-mparams", f"{budget}", "--json", "--out",
                         str(tmp_path / "b"))  # fmt: skip
    assert code == 0, err
    manifest = json.loads(out)
    ((section),) = manifest["passes"]
    info = section["info"]
    assert section["kind"] == "matformer" and info["params"] <= budget * 1e6
    (artifact,) = manifest["artifacts"]
    assert artifact["target"] == "onnx" and all(p["sqnr_db"] >= 60 for p in artifact["parity"].values())
    # the artifact computes the nested model at the chosen widths, on held-out digits
    import onnxruntime as ort

    images = load_labelled("builtin", model.spec).test
    session = ort.InferenceSession(str(tmp_path / "b" / artifact["path"]), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(None, {"image": x[None].numpy()})[0] for x in images.images[:24]])
    model.set_granularity(info["levels"])
    with torch.no_grad():
        want = model(images.images[:24]).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert (got.argmax(-1) == images.labels[:24].numpy()).mean() > 0.3
    # the recipe the bundle records rebuilds the same sub-model
    code, out, err = run(monkeypatch, capsys, "convert", "--recipe", str(tmp_path / "b" / "recipe.toml"), "--json",
                         "--out", str(tmp_path / "b2"))  # fmt: skip
    assert code == 0, err
    again = json.loads(out)
    assert again["passes"][0]["info"]["levels"] == info["levels"]
    assert again["artifacts"][0]["size_bytes"] == artifact["size_bytes"]


def test_bad_extractions_are_one_line_and_write_nothing(checkpoint, tmp_path, monkeypatch, capsys) -> None:
    path, _ = checkpoint
    smallest = _model().parameter_count(0) / 1e6
    vit_path = tmp_path / "vit.pt"
    torch.save({"model": create("vit", "ti16_224", depth=1, img_size=32).state_dict()}, vit_path)
    base = ["extract", "--model", "matvit", "--variant", "mini_32", *SETS]
    cases = [
        ([*base, "--checkpoint", str(path), "--budget-mparams", f"{smallest / 2}"], f"at least that|{smallest:.4g}"),
        ([*base, "--checkpoint", str(vit_path), "--budget-mparams", "1"], "does not match matvit"),
        (["extract", "--model", "vit", "--checkpoint", str(path), "--budget-mparams", "1"], "not 'vit'"),
        ([*base, "--budget-mparams", "1"], "--checkpoint is required"),
        ([*base, "--checkpoint", str(path)], "exactly one budget"),
        ([*base, "--checkpoint", str(path), "--budget-mparams", "1", "--data", str(tmp_path / "none")], "not a folder"),
    ]
    for args, message in cases:
        out_dir = tmp_path / "out"
        code, _, err = run(monkeypatch, capsys, *args, "--out", str(out_dir))
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args, err)
        assert any(m in lines[0] for m in message.split("|")), (message, lines[0])
        assert not out_dir.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_train_takes_a_folder_of_class_folders(tmp_path, monkeypatch, capsys) -> None:
    from PIL import Image

    for name, value in (("circle", 40), ("square", 220)):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((20, 20, 3), value + i, dtype=np.uint8)).save(tmp_path / "data" / name / f"{i}.png")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    args = ["train", "--model", "matvit", "--variant", "mini_32", *SETS, "--data", str(tmp_path / "data")]
    code, out, err = run(monkeypatch, capsys, *args, "--epochs", "2", "--json", "--out", str(tmp_path / "c.pt"))
    assert code == 0, err
    summary = json.loads(out)
    assert summary["classes"] == ["circle", "square"] and "--set num_classes=2" in summary["extract_flags"]
    state = torch.load(tmp_path / "c.pt", weights_only=True)["model"]
    assert state["head.weight"].shape[0] == 2
    (tmp_path / "data" / "empty").mkdir()
    code, _, err = run(monkeypatch, capsys, *args, "--out", str(tmp_path / "d.pt"))
    assert code == 2 and "empty holds 0 image(s)" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d.pt").exists()
