"""`pipeline.run` through the command line: every bundle records its recipe, and `--recipe` rebuilds it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_cli import run

TINY = ["--set", "depth=2", "--set", "img_size=64", "--set", "num_classes=10"]


def manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def shape(m: dict) -> list[tuple]:
    return sorted((a["unit"], a["target"], a["precision"]) for a in m["artifacts"])


def test_convert_recipe_rebuilds_a_quantized_bundle(monkeypatch, capsys, tmp_path) -> None:
    first, second = tmp_path / "b1", tmp_path / "b2"
    args = ["--model", "vit", "--variant", "ti16_224", *TINY, "--quant", "mptq", "--target", "onnx"]
    code, _, err = run(monkeypatch, capsys, "convert", *args, "--out", str(first), "--json")
    assert code == 0, err
    assert (first / "recipe.toml").is_file()
    code, _, _ = run(monkeypatch, capsys, "inspect", str(first), "--verify", "--json")
    assert code == 0  # the extra file does not trouble the reader
    code, _, err = run(monkeypatch, capsys, "convert", "--recipe", str(first / "recipe.toml"), "--out", str(second))
    assert code == 0, err
    a, b = manifest(first), manifest(second)
    assert shape(a) == shape(b) == [("model", "onnx", "int8")]
    assert a["quant"]["units"]["model"]["summary"] == b["quant"]["units"]["model"]["summary"]
    assert [p["kind"] for p in a["passes"]] == ["quant"] and a["passes"][0]["info"]["method"] == "mptq"
    plan = a["quant"]["units"]["model"]["plan"]
    assert (first / plan).read_text() == (second / plan).read_text()  # same weights (seed), same plan
    assert (first / "recipe.toml").read_text() == (second / "recipe.toml").read_text()


def test_flags_beside_a_recipe_and_replacing_its_folder_are_refused(monkeypatch, capsys, tmp_path) -> None:
    bundle = tmp_path / "b1"
    code, _, err = run(
        monkeypatch, capsys, "convert", "--model", "vit", *TINY, "--target", "onnx", "--out", str(bundle)
    )
    assert code == 0, err
    recipe = str(bundle / "recipe.toml")
    before = sorted(p.name for p in tmp_path.iterdir())
    for args, message in [
        (["--target", "tflite", "--out", str(tmp_path / "b2")], "error: --target cannot be given with --recipe"),
        (["--out", str(bundle), "--force"], f"error: refusing --out {bundle}: it holds this run's input"),
    ]:
        code, out, err = run(monkeypatch, capsys, "convert", "--recipe", recipe, *args)
        assert code == 2 and err.count("\n") == 1 and err.startswith(message), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before and (bundle / "manifest.json").is_file()
    assert 'model = "vit"' in (bundle / "recipe.toml").read_text()


def test_a_checkpoint_is_recorded_by_its_sha256(monkeypatch, capsys, tmp_path) -> None:
    """The pipeline, which loads the checkpoint, records its digest (nothing is stuck on the model); the recipe
    names the file, so a rebuild loads the same weights."""
    import hashlib

    import torch

    from edgevit.models import create

    weights = tmp_path / "vit.pt"
    torch.manual_seed(3)
    torch.save({"model": create("vit_ti16_224", depth=2, img_size=64, num_classes=10).state_dict()}, weights)
    out = tmp_path / "b"
    args = ["--model", "vit", "--variant", "ti16_224", *TINY, "--checkpoint", str(weights), "--target", "onnx"]
    code, _, err = run(monkeypatch, capsys, "convert", *args, "--out", str(out))
    assert code == 0, err
    assert "RANDOM" not in err
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert manifest(out)["weights"] == {"source": "checkpoint", "checkpoint_sha256": digest}
    assert f'checkpoint = "{weights}"' in (out / "recipe.toml").read_text()
    random = tmp_path / "r"
    code, _, err = run(
        monkeypatch, capsys, "convert", "--model", "vit", *TINY, "--target", "onnx", "--out", str(random)
    )
    assert code == 0, err
    assert manifest(random)["weights"] == {"source": "random", "checkpoint_sha256": None}
