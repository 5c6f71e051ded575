"""Recipes: a TOML file round-trips to the same Recipe, and every mistake in one is a single line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgevit.errors import EdgevitError
from edgevit.pipeline import QuantConfig, Recipe, check

EXAMPLE = """\
model = "vit"
variant = "ti16_224"
checkpoint = "student.pt"
targets = ["onnx", "coreml"]
calibration = "photos"
seed = 3

[overrides]
depth = 2
img_size = 64
mlp_ratio = 2.5
patch = [4, 4]

[[passes]]
kind = "quant"
method = "mptq"
bits = 4
budget_mb = 2
"""


def write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_file_reads_into_a_recipe_and_writes_back_the_same(tmp_path) -> None:
    recipe = Recipe.from_toml(write(tmp_path, EXAMPLE))
    assert recipe == Recipe(
        model="vit",
        variant="ti16_224",
        checkpoint=tmp_path / "student.pt",  # relative to the file's folder
        overrides={"depth": 2, "img_size": 64, "mlp_ratio": 2.5, "patch": (4, 4)},
        passes=(QuantConfig("mptq", "4", 2.0),),
        targets=("onnx", "coreml"),
        calibration=str(tmp_path / "photos"),
        seed=3,
    )
    again = Recipe.from_toml(write(tmp_path, recipe.to_toml(), "again.toml"))
    assert again == recipe and again.to_toml() == recipe.to_toml()
    assert 'kind = "quant"' in recipe.to_toml() and "precision" not in recipe.to_toml()  # None is left out


def test_flags_make_the_same_recipe_as_a_file(tmp_path) -> None:
    """What `edgevit quantize --set depth=2 --method mptq --bits 4 --budget-mb 2` builds."""
    from edgevit.commands.convert import QuantOptions, recipe_from_flags

    quant = QuantOptions.from_flags("mptq", "4", 2.0, str(tmp_path / "photos"), None)
    flags = recipe_from_flags("vit", "ti16_224", tmp_path / "student.pt", ["depth=2"], "onnx,coreml", None, quant)
    text = EXAMPLE.replace("seed = 3", "seed = 0").replace("img_size = 64\nmlp_ratio = 2.5\npatch = [4, 4]\n", "")
    assert Recipe.from_toml(write(tmp_path, text)) == flags


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('model = "vit"\nmodle = 1\n', "r.toml: unknown key 'modle'; valid keys: model, variant, checkpoint"),
        ('variant = "s"\n', 'r.toml: no model; add e.g. model = "vit"'),
        ('model = "vit"\nseed = "zero"\n', "r.toml: seed = 'zero' must be an integer"),
        ('model = "vit"\ntargets = [1]\n', "r.toml: targets must be a list of target names"),
        ('model = "vit"\nprecision = "int3"\n', "r.toml: unknown precision 'int3'; valid: fp32, fp16"),
        (
            'model = "vit"\n[[passes]]\nkind = "sharpen"\n',
            "r.toml: passes[0].kind = 'sharpen' is not a pass; valid kinds: quant,",
        ),
        ('model = "vit"\n[[passes]]\nkind = "quant"\nbit = 4\n', "r.toml: unknown key passes[0].bit; valid keys of a"),
        ('model = "vit"\n[[passes]]\nkind = "quant"\nmethod = "gptq"\n', "unknown method 'gptq' (passes[0].method)"),
        (
            'model = "vit"\n[[passes]]\nkind = "quant"\nbits = "mixed"\n',
            "passes[0].bits mixed needs passes[0].budget_mb",
        ),
        ('model = "vit"\n[[passes]]\nkind = "quant"\nrecon_iters = "many"\n', "passes[0].recon_iters = 'many' has the"),
        (
            'model = "vit"\nprecision = "fp16"\n[[passes]]\nkind = "quant"\n',
            "precision sets float artifacts; with a quant",
        ),
        ('model = "vit"\n[[passes]]\nkind = "quant"\n[[passes]]\nkind = "quant"\n', "quantizes once"),
        (
            'model = "vit"\n[[passes]]\nkind = "quant"\n[[passes]]\nkind = "prune"\nbudget = 0.3\n',
            "a prune pass after it would undo the plan; put the quant pass last",
        ),
        ('model = "vit"\ntargets = "tensorrt"\n', None),  # read fine; refused by the run's check (below)
        ("model = \n", "r.toml is not valid TOML (Invalid value (at line 1, column 9)); fix the syntax"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_key(tmp_path, text, message) -> None:
    path = write(tmp_path, text)
    if message is None:
        with pytest.raises(EdgevitError, match=r"r\.toml: unknown target 'tensorrt'; valid targets"):
            check(Recipe.from_toml(path))
        return
    with pytest.raises(EdgevitError) as info:
        Recipe.from_toml(path)
    assert "\n" not in str(info.value) and message in str(info.value), str(info.value)


def test_what_the_targets_cannot_hold_names_the_recipe_key(tmp_path) -> None:
    path = write(tmp_path, 'model = "vit"\ntargets = ["onnx"]\n[[passes]]\nkind = "quant"\nbits = 6\n')
    with pytest.raises(EdgevitError, match=r"r\.toml: targets onnx cannot hold 6-bit weights: onnx holds 4/8-bit"):
        check(Recipe.from_toml(path))


def test_a_missing_file_says_so(tmp_path) -> None:
    with pytest.raises(EdgevitError, match="recipe .*nope.toml does not exist"):
        Recipe.from_toml(tmp_path / "nope.toml")
