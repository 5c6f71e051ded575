"""The tokens pass end to end: `edgevit convert --tokens` on a tiny ViT (ONNX parity gate, manifest record,
recipe round trip) and one-line refusals of bad input."""

from __future__ import annotations

import json

import pytest
import torch

from edgevit.errors import EdgevitError
from edgevit.pipeline import Recipe
from edgevit.pipeline.passes import Names, TokensConfig, config_from_table
from tests.test_cli import run

TINY = ("--model", "vit", "--variant", "ti16_224", "--set", "depth=3", "--set", "img_size=64")


def test_convert_with_tokens_writes_a_parity_checked_onnx_bundle_and_its_recipe(monkeypatch, capsys, tmp_path):
    out = tmp_path / "b"
    args = ("convert", *TINY, "--set", "global_pool=avg", "--tokens", "tome", "--token-flops", "0.2")
    code, _, err = run(monkeypatch, capsys, *args, "--target", "onnx", "--out", str(out))
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    (artifact,) = manifest["artifacts"]
    assert artifact["parity"]["logits"]["sqnr_db"] >= 60
    record = (out / "recipe.toml").read_text()
    assert 'kind = "tokens"' in record and 'method = "tome"' in record and "flops = 0.2" in record
    recipe = Recipe.from_toml(out / "recipe.toml")
    assert recipe.passes == (TokensConfig("tome", 0.2, None, 0),)


def test_recipe_table_round_trips_and_refuses_bad_values():
    config = config_from_table({"kind": "tokens", "method": "transform", "keep": 0.8, "start": 1}, Names("passes[0]."))
    assert config == TokensConfig("transform", None, 0.8, 1)
    with pytest.raises(EdgevitError, match=r"passes\[0\]\.keep must be between 0.5"):
        config_from_table({"kind": "tokens", "keep": 0.2}, Names("passes[0]."))
    with pytest.raises(EdgevitError, match=r"unknown key passes\[0\]\.ratio"):
        config_from_table({"kind": "tokens", "ratio": 0.2}, Names("passes[0]."))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--tokens", "merge", "--token-flops", "0.4"), "unknown token method 'merge'"),
        (("--tokens", "tome"), "needs exactly one of --token-flops"),
        (("--tokens", "tome", "--token-flops", "1.5"), "--token-flops must be a fraction"),
        (("--token-flops", "0.4"), "--token-flops only apply with --tokens"),
        (("--tokens", "tome", "--token-flops", "0.95"), "lower --token-flops or --token-start"),
    ],
)
def test_bad_token_flags_are_one_line_and_write_nothing(monkeypatch, capsys, tmp_path, flags, message):
    out = tmp_path / "b"
    code, _, err = run(monkeypatch, capsys, "convert", *TINY, *flags, "--target", "onnx", "--out", str(out))
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 1 and message in errors[0]
    )  # (a budget is measured on the model: its weights note comes first)
    assert not out.exists()


def test_compression_that_costs_flops_is_refused():
    """EfficientTAM's 512 encoder: 1024 tokens but only four global blocks, so the token matrices cost more than
    the smaller MLPs save (measured: +28 % FLOPs at keep 0.5); the pass says so instead of writing a slower model."""
    from edgevit.models import create
    from edgevit.pipeline.passes import PassData, apply

    torch.manual_seed(0)
    model = create("efficienttam", "ti_512").eval()
    encoder = [u for u in model.deploy_units() if u.name == "image_encoder"]
    with pytest.raises(EdgevitError, match="costs more FLOPs than it saves .*leave out --tokens"):
        apply(encoder, TokensConfig("transform", keep=0.5), PassData(("onnx",)))
