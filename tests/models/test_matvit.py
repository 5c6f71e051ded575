"""The `matvit` family: nested MLPs, Mix'n'Match extraction equal to the nested model, static-shape export."""

from __future__ import annotations

import pytest
import torch

from edgevit.errors import EdgevitError
from edgevit.models import matvit, vit
from edgevit.models.registry import create
from edgevit.models.spec import EdgeModel, count_parameters

# At full granularity a MatViT is timm's ViT (see tests/models/test_vit.py for the same numbers).
TIMM_PARAMS = {"ti16_224": 5_717_416, "s16_224": 22_050_664, "b16_224": 86_567_656}


def _image(size: int = 224, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", sorted(TIMM_PARAMS))
def test_full_model_has_vit_parameter_count_and_granularities_shrink_it(variant: str) -> None:
    with torch.device("meta"):
        model = create(f"matvit_{variant}")
    assert isinstance(model, EdgeModel) and model.spec.name == "matvit"
    cfg = model.cfg
    assert count_parameters(model) == TIMM_PARAMS[variant]
    assert cfg.hidden_widths == tuple(cfg.embed_dim * k for k in (0.5, 1, 2, 4))
    counts = [model.parameter_count(g) for g in range(len(cfg.granularities))]
    assert counts[-1] == TIMM_PARAMS[variant] and counts == sorted(set(counts))
    smallest_cut = cfg.depth * (cfg.mlp_hidden - cfg.hidden_widths[0]) * (2 * cfg.embed_dim + 1)
    assert counts[0] == TIMM_PARAMS[variant] - smallest_cut


def test_extracted_submodel_equals_nested_model_and_is_smaller() -> None:
    model = create("matvit_s16_224", depth=4)
    levels = [0, 3, 1, 2]
    model.set_granularity(levels)
    assert model.granularity == levels
    sub = model.extract()
    assert type(sub) is vit.VisionTransformer and sub.spec.variant == "s16_224@0.3.1.2"
    assert [b.mlp.fc1.out_features for b in sub.blocks] == [192, 1536, 384, 768]
    assert count_parameters(sub) == model.parameter_count() < count_parameters(model)
    x = _image(batch=2)
    with torch.no_grad():
        torch.testing.assert_close(sub(x), model(x), atol=1e-5, rtol=0)
        full = model.extract(3)(x)
        model.set_granularity(3)
        torch.testing.assert_close(full, model(x), atol=1e-5, rtol=0)
        assert not torch.allclose(full, sub(x), atol=1e-3)  # the granularity does change the model
    with torch.no_grad():  # the extracted tensors are copies: editing them leaves the nested model alone
        sub.blocks[0].mlp.fc1.weight.zero_()
    assert model.blocks[0].mlp.fc1.weight.abs().sum() > 0


def test_full_granularity_is_a_plain_vit_with_the_same_weights() -> None:
    """A plain ViT checkpoint loads into a MatViT (same keys) and computes the same at full width."""
    model = create("matvit_ti16_224", depth=2)
    plain = create("vit_ti16_224", depth=2)
    plain.load_state_dict(model.state_dict(), strict=True)
    x = _image()
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x))


def test_set_granularity_rejects_bad_choices() -> None:
    model = create("matvit_ti16_224", depth=2)
    model.set_granularity(1)
    assert model.granularity == [1, 1]
    assert all(b.mlp.hidden == 192 for b in model.blocks)
    with pytest.raises(EdgevitError, match="2 blocks"):
        model.set_granularity([0, 1, 2])
    with pytest.raises(EdgevitError, match="not an index"):
        model.set_granularity([0, 4])
    with pytest.raises(EdgevitError, match="not an index"):
        model.extract(-1)
    assert model.granularity == [1, 1]


def test_deploy_unit_exports_at_a_mixed_granularity_and_equals_eager() -> None:
    model = create("matvit_ti16_224", depth=2)
    model.set_granularity([0, 2])
    (unit,) = model.deploy_units()
    assert unit.name == "model" and unit.output_names == ("logits",)
    exported = torch.export.export(unit.module, unit.example_inputs)
    (eager,) = unit.run_eager(*unit.example_inputs)
    with torch.no_grad():
        out = exported.module()(*unit.example_inputs)
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-5)
    (sub_unit,) = model.extract().deploy_units()
    (sub_out,) = sub_unit.run_eager(*sub_unit.example_inputs)
    torch.testing.assert_close(sub_out, eager, atol=1e-5, rtol=0)


def test_unknown_variant_and_bad_granularities_are_user_errors() -> None:
    with pytest.raises(EdgevitError) as err:
        create("matvit", variant="l16_224")
    assert all(v in str(err.value) for v in matvit.VARIANTS)
    with pytest.raises(EdgevitError, match="end at 1.0"):
        create("matvit_ti16_224", depth=1, granularities=(0.25, 0.5))
    with pytest.raises(EdgevitError, match="increase strictly"):
        create("matvit_ti16_224", depth=1, granularities=(0.5, 0.25, 1.0))
    with pytest.raises(EdgevitError, match="whole number"):
        create("matvit_ti16_224", depth=1, granularities=(0.3, 1.0))


def test_the_mini_variant_trains_here_and_nests_four_widths() -> None:
    model = create("matvit", "mini_32")
    assert model.cfg.hidden_widths == (32, 64, 128, 256) and model.cfg.num_classes == 10
    assert [model.parameter_count(g) for g in range(4)] == [92_490, 109_002, 142_026, 208_074]
    assert count_parameters(model) == 208_074
