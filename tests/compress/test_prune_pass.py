"""The prune pass through the CLI, a recipe file and the pipeline: a smaller ViT lowered to ONNX with its parity
gate passed, the pass's record in the manifest, the recipe round trip, and one-line refusals."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest

from converters.bundle import read_manifest
from edgevit.errors import EdgevitError
from edgevit.pipeline import Recipe
from edgevit.pipeline.passes import Names, PruneConfig, config_from_table
from tests.test_cli import run

TINY = ["--model", "vit", "--variant", "ti16_224", "--set", "depth=2", "--set", "img_size=64"]
TINY += ["--set", "num_classes=10"]


def onnx_weight_count(path) -> int:
    return sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)


def test_convert_prune_writes_a_smaller_verified_onnx_bundle_that_its_recipe_rebuilds(tmp_path, monkeypatch, capsys):
    out = tmp_path / "pruned"
    args = ["--prune", "0.3", "--prune-score", "taylor", "--recover-steps", "2", "--target", "onnx"]
    code, _, err = run(monkeypatch, capsys, "convert", *TINY, *args, "--out", str(out), "--json")
    assert code == 0, err
    manifest = read_manifest(out)
    (art,) = manifest["artifacts"]
    assert float(art["parity"]["logits"]["sqnr_db"]) >= art["min_sqnr_db"]
    (record,) = manifest["passes"]
    info = record["info"]["units"]["model"]
    assert record["kind"] == "prune" and (info["score"], info["budget"], info["by"]) == ("taylor", 0.3, "params")
    assert info["params_after"] <= 0.7 * info["params_before"] and info["flops_after"] < info["flops_before"]
    assert len(info["blocks"]) == 2 and info["recover_steps"] == 2 and info["fidelity_sqnr_db"] is not None
    # the artifact holds the smaller matrices: its weights are the pruned count (position/class tokens included)
    assert abs(onnx_weight_count(out / art["path"]) - info["params_after"]) < 0.01 * info["params_after"]
    recipe = Recipe.from_toml(out / "recipe.toml")
    assert recipe.passes == (PruneConfig(0.3, "taylor", "params", 2),)
    again = tmp_path / "again"
    code, _, err = run(monkeypatch, capsys, "convert", "--recipe", str(out / "recipe.toml"), "--out", str(again))
    assert code == 0, err
    assert read_manifest(again)["passes"][0]["info"]["units"]["model"]["blocks"] == info["blocks"]


def test_a_recipe_prune_table_reads_and_refuses_by_key() -> None:
    table = {"kind": "prune", "budget": 0.5, "score": "magnitude", "by": "flops", "units": ["image_encoder"]}
    expected = PruneConfig(0.5, "magnitude", "flops", 0, ("image_encoder",))
    assert config_from_table(table, Names("passes[0].")) == expected
    with pytest.raises(EdgevitError, match=r"unknown key passes\[0\]\.ratio"):
        config_from_table({"kind": "prune", "ratio": 0.3}, Names("passes[0]."))
    with pytest.raises(EdgevitError, match=r"passes\[0\]\.budget 1.2 is not a fraction in \(0, 1\)"):
        config_from_table({"kind": "prune", "budget": 1.2}, Names("passes[0]."))
    with pytest.raises(EdgevitError, match=r"passes\[0\]\.score = 3 has the wrong type"):
        config_from_table({"kind": "prune", "score": 3}, Names("passes[0]."))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prune", "1.5"], r"--prune 1.5 is not a fraction in \(0, 1\)"),
        (["--prune", "0"], r"--prune 0 is not a fraction in \(0, 1\)"),
        (["--prune-score", "taylor"], "--prune-score only apply with --prune FRACTION"),
        (["--prune", "0.3", "--prune-score", "random"], "unknown --prune-score 'random'; valid: magnitude"),
        (["--prune", "0.3", "--prune-by", "seconds"], "unknown --prune-by 'seconds'"),
        (["--prune", "0.9"], r"removes more params than unit 'model' can lose \(at most 0\.7\d+.*at most 0\.7\d"),
    ],
)
def test_bad_prune_flags_are_one_line_errors_and_leave_nothing(tmp_path, monkeypatch, capsys, args, message):
    out = tmp_path / "bundle"
    code, _, err = run(monkeypatch, capsys, "convert", *TINY, *args, "--target", "onnx", "--out", str(out))
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and err.strip().endswith(errors[0]), err  # a random-weights note aside
    assert re.search(message, errors[0]), errors[0]
    assert not out.exists()


def test_a_model_without_transformer_blocks_is_refused(tmp_path, monkeypatch, capsys):
    out = tmp_path / "bundle"
    code, _, err = run(
        monkeypatch, capsys, "convert", "--model", "efficientnet_lite0", "--prune", "0.3", "--target", "onnx",
        "--out", str(out),
    )  # fmt: skip
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "has transformer blocks to prune: prune a ViT" in errors[0], err
    assert not out.exists()


def test_a_latency_budget_is_measured_through_onnxruntime(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "fast"
    # 0.1, not 0.2: the tiny ViT can lose at most ~0.2 of its measured latency (each block keeps a head and some
    # MLP channels), and on a loaded machine the measured ceiling fell to 0.197 (CI, stop 19)
    args = ["--prune", "0.1", "--prune-by", "latency", "--target", "onnx"]
    code, _, err = run(monkeypatch, capsys, "convert", *TINY, *args, "--out", str(out), "--json")
    assert code == 0, err
    info = read_manifest(out)["passes"][0]["info"]["units"]["model"]
    before, after = info["latency_ms"]
    assert info["by"] == "latency" and after <= 0.9 * before and info["params_after"] < info["params_before"]
    assert (tmp_path / "cache" / "edgevit" / "latency.json").is_file()  # timings kept for the next search
