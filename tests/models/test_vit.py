"""The `vit` family: timm-compatible shapes and parameter counts, static-shape export, registry names."""

from __future__ import annotations

import math

import pytest
import torch

from edgevit.errors import EdgevitError
from edgevit.models import vit
from edgevit.models.registry import create
from edgevit.models.spec import EdgeModel, count_parameters

# timm's counts for vit_{tiny,small,base}_patch16_224 (with the 1000-class head) and DINOv2 ViT-S/14
# (features only, without the pre-training mask token, position embedding at 224 px = 16x16 + cls).
TIMM_PARAMS = {
    "ti16_224": 5_717_416,
    "s16_224": 22_050_664,
    "b16_224": 86_567_656,
    "dinov2_s14_224": 21_628_800,
}


def _image(size: int = 224, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", sorted(TIMM_PARAMS))
def test_variant_parameter_counts_match_timm(variant: str) -> None:
    with torch.device("meta"):  # shapes only: skips allocating and initialising up to 86 M weights
        model = create(f"vit_{variant}")
    assert isinstance(model, EdgeModel)
    assert model.spec.variant == variant
    assert count_parameters(model) == TIMM_PARAMS[variant]


def test_forward_shapes_for_classifier_and_features() -> None:
    clf = create("vit", depth=2)
    with torch.no_grad():
        assert clf.forward_features(_image(batch=2)).shape == (2, 1 + 14 * 14, 384)
        assert clf(_image(batch=2)).shape == (2, 1000)
    dino = create("vit_dinov2_s14_224", depth=2)
    assert dino.spec.task == "features"
    assert isinstance(dino.blocks[0].ls1, vit.LayerScale)
    with torch.no_grad():
        assert dino.forward_features(_image()).shape == (1, 1 + 16 * 16, 384)
        assert dino(_image()).shape == (1, 384)


def test_avg_pool_without_class_token_pools_patch_tokens() -> None:
    model = create("vit_ti16_224", depth=1, class_token=False, global_pool="avg", num_classes=0)
    assert model.pos_embed.shape == (1, 14 * 14, 192)
    x = _image()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_features(x).mean(dim=1))


def test_attention_equals_explicit_softmax_attention() -> None:
    torch.manual_seed(0)
    attn = vit.Attention(dim=64, num_heads=4)
    x = torch.randn(2, 10, 64)
    q, k, v = attn.qkv(x).reshape(2, 10, 3, 4, 16).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(16), dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 10, 64))
    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected.detach(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["vit_s16_224", "vit_dinov2_s14_224"])
def test_deploy_unit_exports_and_equals_eager(name: str) -> None:
    model = create(name, depth=2)
    (unit,) = model.deploy_units()
    assert unit.name == "model" and unit.input_names == ("image",)
    assert unit.output_names == (("logits",) if model.cfg.num_classes else ("features",))
    assert unit.example_inputs[0].shape == (1, 3, 224, 224)
    exported = torch.export.export(unit.module, unit.example_inputs)
    (eager,) = unit.run_eager(*unit.example_inputs)
    with torch.no_grad():
        out = exported.module()(*unit.example_inputs)
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-5)


def test_create_by_full_name_default_and_override() -> None:
    with torch.device("meta"):
        assert create("vit").spec.variant == "s16_224"
    model = create("vit_ti16_224", depth=2)
    assert len(model.blocks) == 2 and model.cfg.embed_dim == 192
    assert tuple(model.blocks[1].attn.qkv.weight.shape) == (3 * 192, 192)


def test_unknown_variant_and_bad_config_are_user_errors() -> None:
    with pytest.raises(EdgevitError) as err:
        create("vit", variant="h14_224")
    assert all(v in str(err.value) for v in vit.VARIANTS)
    with pytest.raises(EdgevitError, match="multiple of patch_size"):
        create("vit", img_size=200)
    with pytest.raises(EdgevitError, match="global_pool='avg'"):
        create("vit", class_token=False)


def test_checkpoint_at_another_resolution_loads_with_resampled_pos_embed(tmp_path) -> None:
    """An official DINOv2 checkpoint stores its position embedding at 518 px and carries a mask token."""
    trained = create("vit_dinov2_s14_224", depth=1, img_size=518)
    sd = dict(trained.state_dict())
    sd["mask_token"] = torch.zeros(1, 384)
    path = tmp_path / "dinov2.pt"
    torch.save(sd, path)
    model = create("vit_dinov2_s14_224", depth=1, checkpoint=path)
    expected = vit.resample_pos_embed(trained.pos_embed.detach(), 16, 1)
    assert expected.shape == (1, 257, 384)
    torch.testing.assert_close(model.pos_embed.detach(), expected)
    torch.testing.assert_close(model.pos_embed[:, 0], trained.pos_embed[:, 0])  # class token's is kept as is
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, trained.blocks[0].attn.qkv.weight)


def test_resample_pos_embed_keeps_smooth_fields_and_rejects_non_square() -> None:
    ramp = torch.linspace(0, 1, 8).reshape(8, 1, 1).expand(8, 8, 2).reshape(1, 64, 2)  # rises down the rows
    out = vit.resample_pos_embed(torch.cat([torch.full((1, 1, 2), 7.0), ramp], dim=1), 4, 1)
    assert out.shape == (1, 17, 2) and torch.all(out[:, 0] == 7.0)
    grid = out[0, 1:, 0].reshape(4, 4)
    torch.testing.assert_close(grid, grid[:, :1].expand(4, 4))
    assert torch.all(grid[1:, 0] > grid[:-1, 0])
    with pytest.raises(EdgevitError, match="not a square grid"):
        vit.resample_pos_embed(torch.zeros(1, 1 + 10, 2), 4, 1)
