"""The pass registry, and one quantization recipe: the plan `edgevit quantize` ships is the one the suite measures."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import pytest

from edgevit.errors import EdgevitError
from edgevit.pipeline import QuantConfig, Recipe, build_model, passes
from edgevit.pipeline.passes import Names, Pass, PassRecord
from edgevit.unit_data import unit_batches
from quant.plan import QuantPlan

TINY = {"depth": 2, "img_size": 64, "num_classes": 10}


def test_the_registry_maps_configs_and_kinds_to_handlers() -> None:
    assert passes.kinds()[0] == "quant" and "matformer" in passes.kinds()
    assert passes.pass_for(QuantConfig()).apply is passes.quant.apply
    table = {"kind": "quant", "method": "mptq", "bits": 6}
    assert passes.config_from_table(table, Names("passes[0].")) == QuantConfig("mptq", "6")
    with pytest.raises(TypeError, match="not a registered pass config"):
        passes.pass_for(object())
    with pytest.raises(ValueError, match="already registered"):
        passes.register(passes.pass_for(QuantConfig()))


def test_a_new_pass_plugs_in_with_one_register_line(monkeypatch) -> None:
    """A pass the runner has never heard of: registered, it is read from a recipe and applied in order."""

    @dataclass(frozen=True)
    class Rename:
        kind: ClassVar[str] = "rename"
        suffix: str = "_x"

    def apply(units, config, data):
        import dataclasses

        renamed = [dataclasses.replace(u, name=u.name + config.suffix) for u in units]
        return renamed, PassRecord("rename", {"suffix": config.suffix})

    monkeypatch.setattr(passes, "_BY_KIND", dict(passes._BY_KIND))
    passes.register(Pass("rename", Rename, apply, lambda t, n: Rename(**t), lambda c, n: None))
    config = passes.config_from_table({"kind": "rename", "suffix": "_y"}, Names("passes[0]."))
    recipe = Recipe("vit", "ti16_224", overrides=TINY, passes=(config,))
    model = build_model(recipe)
    units, record = passes.apply(model.deploy_units(), config, passes.PassData(("onnx",)))
    assert [u.name for u in units] == ["model_y"] and record.info == {"suffix": "_y"}
    assert "kind" in recipe.to_toml() and 'suffix = "_y"' in recipe.to_toml()


def test_the_command_ships_the_plan_the_suite_measures(tmp_path, capsys) -> None:
    """mptq at W4: the CLI's plan (α searched for 4-bit weights) equals the suite's, layer for layer."""
    from benchmarks.suites.quant import ours as quant_ours
    from edgevit.commands.quantize import quantize

    out = tmp_path / "bundle"
    overrides = [f"{k}={v}" for k, v in TINY.items()]
    quantize("vit", "ti16_224", None, overrides, "mptq", "4", None, "builtin", "coreml", False, out, False, True)
    manifest = json.loads(capsys.readouterr().out)
    shipped = QuantPlan.from_json((out / manifest["quant"]["units"]["model"]["plan"]).read_text())

    model = build_model(Recipe("vit", "ti16_224", overrides=TINY))
    (found,), _ = unit_batches(model, "builtin")
    prepared = quant_ours.prepare("mptq", found.unit.module, found.calib, (4, 8))
    passes.quant.four_bit_grid(prepared, ("coreml",), found.calib)  # groups (Core ML lowers them), AWQ-scaled
    measured = quant_ours.uniform_plan(prepared, 4, 8)
    assert json.loads(shipped.to_json())["layers"] == json.loads(measured.to_json())["layers"]
    assert shipped.summary()["smoothed_layers"] > 0 and shipped.summary()["weight_bits"] == {"4": 10}
    # α was searched for 4-bit weights: at 8 bits the search picks other strengths (what the CLI shipped before)
    prepared_w8 = quant_ours.prepare("mptq", found.unit.module, found.calib, (8, 8))
    passes.quant.four_bit_grid(prepared_w8, ("coreml",), found.calib)
    at_w8 = quant_ours.uniform_plan(prepared_w8, 4, 8)
    assert json.loads(at_w8.to_json())["layers"] != json.loads(shipped.to_json())["layers"]


def test_a_quant_pass_checks_its_values_before_any_work() -> None:
    with pytest.raises(EdgevitError, match="--recon-iters must be at least 1"):
        passes.quant.check(QuantConfig("qhyvit", "8", recon_iters=0), Names())
    with pytest.raises(EdgevitError, match="--target onnx cannot hold 6-bit weights"):
        passes.quant.usable_targets(QuantConfig("ptq", "6"), ("onnx",), Names())
    kept, skipped = passes.quant.usable_targets(QuantConfig("ptq", "6"), ("onnx", "coreml"), Names())
    assert kept == ("coreml",) and skipped == {"onnx": "holds 4/8-bit weights and 8-bit activations"}
