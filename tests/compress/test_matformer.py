"""MatFormer: joint training of the nested widths, Mix'n'Match under budgets, the pass, and labelled folders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgevit.compress.matformer import (
    GranularitySampler,
    LatencyModel,
    MatTrainConfig,
    mix_n_match,
    monotone_choices,
    score,
    train_matvit,
)
from edgevit.compress.matformer.search import maximal
from edgevit.data.labelled import load_labelled
from edgevit.errors import EdgevitError
from edgevit.models import create, vit
from edgevit.models.spec import count_parameters
from edgevit.pipeline.passes import Names, PassData, config_from_table
from edgevit.pipeline.passes.extract import MatFormerConfig, apply, check

TINY = {"depth": 2, "embed_dim": 32, "num_heads": 2, "img_size": 16}  # MLP widths 16, 32, 64, 128; 16 patches


def tiny(seed: int = 0):
    torch.manual_seed(seed)
    return create("matvit", "mini_32", **TINY)


@pytest.fixture(scope="module")
def digits():
    return load_labelled("builtin", tiny().spec)


@pytest.fixture(scope="module")
def trained(digits):
    """A tiny MatViT trained briefly with one granularity drawn per step."""
    return train_matvit(tiny(), digits, MatTrainConfig(epochs=10, batch_size=32, lr=5e-3), seed=0, progress=False)


def test_training_lowers_the_loss_and_trains_every_width(trained, digits) -> None:
    losses, drawn = trained.losses, trained.drawn
    assert len(drawn) == len(losses) == trained.metrics["steps"]  # one draw per optimisation step
    assert set(drawn) == {0, 1, 2, 3} and max(np.bincount(drawn)) < 0.4 * len(drawn)  # uniform-ish, all widths
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])
    for fraction in trained.model.cfg.granularities:  # every width, never trained alone, is far above chance
        assert trained.metrics[f"accuracy@{fraction:g}"] > 0.5, trained.metrics
    assert trained.model.granularity == [3, 3]  # handed back at full width


def test_the_sampler_draws_once_per_training_forward_and_repeats_with_its_seed() -> None:
    model = tiny()
    x = torch.zeros(2, 3, 16, 16)
    sequences = []
    for _ in range(2):
        sampler = GranularitySampler(model, seed=3)
        model.train()
        for _ in range(12):
            model(x)
        model.eval()
        model(x)  # evaluation runs at the last width drawn, and draws nothing
        sampler.remove()
        assert model.granularity == [sampler.drawn[-1]] * 2
        sequences.append(sampler.drawn)
    assert len(sequences[0]) == 12 and sequences[0] == sequences[1] and len(set(sequences[0])) > 1


def test_the_search_space_is_the_papers_non_decreasing_choices() -> None:
    choices = monotone_choices(4, 4)
    assert len(choices) == math.comb(4 + 4 - 1, 4) == 35
    assert all(list(c) == sorted(c) for c in choices)
    top = maximal([c for c in choices if sum(c) <= 5])
    assert (1, 1, 1, 2) in top and (0, 0, 2, 3) in top and (1, 1, 1, 1) not in top
    assert all(sum(c) == 5 for c in top)  # within a sum budget, only full spends are maximal


def test_extraction_honours_the_budget_and_equals_the_nested_forward(trained, digits) -> None:
    model = trained.model
    counts = [model.parameter_count(g) for g in range(4)]
    budget = (counts[1] + counts[2]) / 2 / 1e6
    (unit,) = model.deploy_units()
    (out,), record = apply([unit], MatFormerConfig(budget_mparams=budget), PassData(("onnx",)))
    info = record.info
    sub = out.module
    assert type(sub) is vit.VisionTransformer and out.name == "model" and out.example_inputs == unit.example_inputs
    assert count_parameters(sub) == info["params"] <= budget * 1e6 < info["full_params"]
    assert [b.mlp.fc1.out_features for b in sub.blocks] == info["hidden_widths"]
    assert all(c["cost"] <= budget for c in info["candidates"])
    assert info["selection_loss"] == min(c["loss"] for c in info["candidates"])
    assert model.granularity == [3, 3]  # the search left the nested model as it was
    images = digits.test.images[:16]
    model.set_granularity(info["levels"])
    with torch.no_grad():
        torch.testing.assert_close(sub(images), model(images), atol=1e-5, rtol=0)
    model.set_granularity(3)
    loss, accuracy = score(model, tuple(info["levels"]), digits.select)
    assert (loss, accuracy) == (info["selection_loss"], info["selection_accuracy"])
    assert model.granularity == list(info["levels"])
    model.set_granularity(3)  # the fixture is shared


def test_a_budget_below_the_smallest_width_names_the_smallest(trained, digits) -> None:
    model = trained.model
    smallest = model.parameter_count(0) / 1e6
    with pytest.raises(EdgevitError, match=f"below the smallest sub-model .*{smallest:.4g} M params"):
        apply(model.deploy_units(), MatFormerConfig(budget_mparams=smallest * 0.9), PassData(("onnx",)))
    # exactly the smallest fits, and is what comes out
    (out,), record = apply(model.deploy_units(), MatFormerConfig(budget_mparams=smallest), PassData(("onnx",)))
    assert record.info["levels"] == [0, 0] and count_parameters(out.module) == model.parameter_count(0)


def test_a_latency_budget_is_measured_through_onnxruntime(trained, digits, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    model = trained.model
    fit = LatencyModel(model)
    assert len(fit.uniform) == 4 and fit.uniform == sorted(fit.uniform) and fit.uniform[0] > 0
    assert (tmp_path / "edgevit" / "latency.json").is_file()  # measured once, in the one latency cache
    with pytest.raises(EdgevitError, match="below the smallest sub-model"):
        apply(model.deploy_units(), MatFormerConfig(budget_ms=fit.uniform[0] / 2), PassData(("onnx",)))
    (out,), record = apply(model.deploy_units(), MatFormerConfig(budget_ms=fit.uniform[-1]), PassData(("onnx",)))
    assert record.info["measured_ms"] <= fit.uniform[-1] and record.info["latency_model_uniform_ms"] == fit.uniform


def test_the_search_prefers_lower_held_out_loss(trained, digits) -> None:
    model = trained.model
    found = mix_n_match(model, 0.5, lambda levels: sum(levels) / 6, digits.select)  # widths summing to 3 at most
    assert {(0, 3), (1, 2)} <= {c.levels for c in found} and all(sum(c.levels) <= 3 for c in found)
    assert [c.loss for c in found] == sorted(c.loss for c in found)
    assert any("greedy" in c.origin for c in found) and model.granularity == [3, 3]


def test_the_pass_refuses_other_models_and_bad_settings() -> None:
    units = create("vit", "ti16_224", depth=1, img_size=32).deploy_units()
    with pytest.raises(EdgevitError, match="extracts from a matvit model"):
        apply(units, MatFormerConfig(budget_mparams=1.0), PassData(("onnx",)))
    with pytest.raises(EdgevitError, match="exactly one budget"):
        check(MatFormerConfig(), Names())
    with pytest.raises(EdgevitError, match="exactly one budget"):
        check(MatFormerConfig(budget_mparams=1.0, budget_ms=2.0), Names())
    with pytest.raises(EdgevitError, match="--budget-mparams must be a positive number"):
        check(MatFormerConfig(budget_mparams=-1.0), Names())
    with pytest.raises(EdgevitError, match=r"unknown key passes\[0\]\.budget"):
        config_from_table({"kind": "matformer", "budget": 1}, Names("passes[0]."))
    with pytest.raises(EdgevitError, match=r"passes\[0\]\.budget_ms = '1' has the wrong type"):
        config_from_table({"kind": "matformer", "budget_ms": "1"}, Names("passes[0]."))
    table = {"kind": "matformer", "budget_mparams": 1, "data": "builtin"}
    assert config_from_table(table, Names("passes[0].")) == MatFormerConfig(budget_mparams=1.0)


def _write_class(folder, count: int, value: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(np.full((12, 12, 3), value + i, dtype=np.uint8)).save(folder / f"{i:02d}.png")


def test_a_folder_of_class_folders_is_labelled_and_split(tmp_path) -> None:
    spec = tiny().spec
    _write_class(tmp_path / "cats", 7, 10)
    _write_class(tmp_path / "dogs", 3, 200)
    data = load_labelled(tmp_path, spec)
    assert data.classes == ("cats", "dogs")
    assert (len(data.train), len(data.select)) == (8, 2)  # cats: the 5th held out; dogs (3 < 5): the last
    assert data.select.labels.tolist() == [0, 1] and data.train.images.shape[1:] == (3, 16, 16)
    assert data.test is data.select and data.fingerprint != load_labelled("builtin", spec).fingerprint
    (tmp_path / "birds").mkdir()
    with pytest.raises(EdgevitError, match="birds holds 0 image"):
        load_labelled(tmp_path, spec)
    _write_class(tmp_path / "single" / "only", 3, 50)
    with pytest.raises(EdgevitError, match="holds 1 class sub-folder"):
        load_labelled(tmp_path / "single", spec)
    with pytest.raises(EdgevitError, match="is not a folder"):
        load_labelled(tmp_path / "missing", spec)
