"""The conv + attention hybrids (`mobilevit`, `efficientformer`): timm's parameter counts, the BN/LN/GN mix,
bridge blocks, static-shape export."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgevit.errors import EdgevitError
from edgevit.models import efficientformer, mobilevit
from edgevit.models.registry import create
from edgevit.models.spec import EdgeModel, count_parameters
from quant.qhyvit import HasBlocksInOrder, HasBridgeBlocks, bridges_of

# timm's published counts in millions (its results tables / model cards, 2 decimals). timm's EfficientFormer
# carries a distillation head that ours folds into the class head at load time, so it is added back here.
TIMM_PARAMS_M = {
    "mobilevit_xxs": 1.27,
    "mobilevit_xs": 2.32,
    "mobilevit_s": 5.58,
    "mobilevitv2_050": 1.37,
    "mobilevitv2_075": 2.87,
    "mobilevitv2_100": 4.90,
    "efficientformer_l1": 12.29,
    "efficientformer_l3": 31.41,
}
# Small, fast builds of each architecture (64 px keeps every patch unfold exact).
SMALL = {
    "mobilevit_xxs": dict(img_size=64, mv2_blocks=(1, 1), transformer_depths=(1, 1, 1)),
    "mobilevitv2_050": dict(img_size=64, mv2_blocks=(1, 1), transformer_depths=(1, 1, 1)),
    "efficientformer_l1": dict(img_size=64, depths=(1, 1, 1, 2)),
}


def _image(size: int = 64, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _norm_kinds(module: nn.Module) -> set[type[nn.Module]]:
    kinds = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
    return {k for m in module.modules() for k in kinds if isinstance(m, k)}


@pytest.mark.parametrize("variant", sorted(TIMM_PARAMS_M))
def test_variant_parameter_counts_match_timm(variant: str) -> None:
    with torch.device("meta"):
        model = create(variant)
    assert isinstance(model, EdgeModel) and model.spec.variant == variant
    family = "efficientformer" if variant.startswith("efficientformer") else "mobilevit"
    assert model.spec.name == family and model.spec.loop == "single"
    count = count_parameters(model)
    if variant.startswith("efficientformer"):
        count += model.cfg.widths[-1] * 1000 + 1000  # timm's head_dist
    assert round(count / 1e6, 2) == TIMM_PARAMS_M[variant]


def test_forward_shapes_and_the_mix_of_norms() -> None:
    x = _image(batch=2)
    v1 = create("mobilevit_xxs", **SMALL["mobilevit_xxs"])
    v2 = create("mobilevitv2_050", **SMALL["mobilevitv2_050"])
    ef = create("efficientformer_l1", **SMALL["efficientformer_l1"])
    with torch.no_grad():
        assert v1.forward_features(x).shape == (2, 320, 2, 2)
        assert v2.forward_features(x).shape == (2, 256, 2, 2)
        assert ef.forward_features(x).shape == (2, 2 * 2, 448)
        for model in (v1, v2, ef):
            assert model(x).shape == (2, 1000)
    assert _norm_kinds(v1) == {nn.BatchNorm2d, nn.LayerNorm}
    assert _norm_kinds(v2) == {nn.BatchNorm2d, nn.GroupNorm}
    assert _norm_kinds(ef) == {nn.BatchNorm2d, nn.LayerNorm}
    assert v1.spec.mean == (0.0, 0.0, 0.0) and ef.spec.mean == (0.485, 0.456, 0.406)
    features = create("mobilevit_xxs", num_classes=0, **SMALL["mobilevit_xxs"])
    assert features.spec.task == "features"
    with torch.no_grad():
        assert features(x).shape == (2, 320)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_deploy_unit_exports_and_equals_eager(name: str) -> None:
    model = create(name, **SMALL[name])
    (unit,) = model.deploy_units()
    assert unit.name == "model" and unit.input_names == ("image",) and unit.output_names == ("logits",)
    assert unit.example_inputs[0].shape == (1, 3, 64, 64)
    exported = torch.export.export(unit.module, unit.example_inputs)
    (eager,) = unit.run_eager(*unit.example_inputs)
    with torch.no_grad():
        out = exported.module()(*unit.example_inputs)
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-5)


def test_bridge_block_names() -> None:
    with torch.device("meta"):
        mvit = create("mobilevit_xxs")
        eformer = create("efficientformer_l1")
    assert [(b.conv_name, b.attn_name) for b in mvit.bridge_blocks()] == [
        ("stages.2.0", "stages.2.1"),
        ("stages.3.0", "stages.3.1"),
        ("stages.4.0", "stages.4.1"),
    ]
    # L1's last stage: three Meta4D blocks, Flat, one Meta3D block.
    (bridge,) = eformer.bridge_blocks()
    assert (bridge.conv_name, bridge.attn_name) == ("stages.3.blocks.2", "stages.3.blocks.4")
    assert isinstance(bridge.path[1], efficientformer.Flat)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_bridge_path_reproduces_the_model_between_conv_input_and_attention_output(name: str) -> None:
    """A quantizer reconstructs a bridge from the conv block's input to the attention block's output."""
    model = create(name, **SMALL[name])
    bridges = model.bridge_blocks()
    assert bridges
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    for b in bridges:
        conv, attn = model.get_submodule(b.conv_name), model.get_submodule(b.attn_name)
        assert b.path[0] is conv and b.path[-1] is attn
        assert nn.BatchNorm2d in _norm_kinds(conv) and not _norm_kinds(conv) & {nn.LayerNorm, nn.GroupNorm}
        assert _norm_kinds(attn) & {nn.LayerNorm, nn.GroupNorm}
        hooks.append(conv.register_forward_pre_hook(lambda m, a, n=b.conv_name: seen.__setitem__(n, a[0])))
        hooks.append(attn.register_forward_hook(lambda m, a, o, n=b.attn_name: seen.__setitem__(n, o)))
    with torch.no_grad():
        model(_image())
        for b in bridges:
            torch.testing.assert_close(b.path(seen[b.conv_name]), seen[b.attn_name])
    for h in hooks:
        h.remove()


def test_mobilevit_unfold_fold_equal_timm_reshapes() -> None:
    """The permute-based unfold/fold put the same values in the same places as timm's reshape sequence."""
    torch.manual_seed(0)
    block = mobilevit.MobileViTBlock(chs=8, dim=16, depth=1, num_heads=4, patch_size=2).eval()
    x = torch.randn(2, 8, 8, 6)
    with torch.no_grad():
        y = block.conv_1x1(block.conv_kxk(x))
        b, c, h, w = y.shape
        nh, nw = h // 2, w // 2
        t = y.reshape(b * c * nh, 2, nw, 2).transpose(1, 2)
        t = t.reshape(b, c, nh * nw, 4).transpose(1, 3).reshape(b * 4, nh * nw, -1)
        t = block.norm(block.transformer(t))
        t = t.contiguous().view(b, 4, nh * nw, -1).transpose(1, 3).reshape(b * c * nh, nw, 2, 2)
        t = t.transpose(1, 2).reshape(b, c, h, w)
        expected = block.conv_fusion(torch.cat((x, block.conv_proj(t)), dim=1))
        torch.testing.assert_close(block(x), expected)


def test_efficientformer_attention_equals_biased_softmax_attention() -> None:
    torch.manual_seed(0)
    attn = efficientformer.EfficientFormerAttention(dim=64, key_dim=8, num_heads=2, attn_ratio=4, resolution=3)
    nn.init.normal_(attn.attention_biases)
    x = torch.randn(2, 9, 64)
    with torch.no_grad():
        q, k, v = attn.qkv(x).reshape(2, 9, 2, -1).permute(0, 2, 1, 3).split([8, 8, 32], dim=3)
        rows, cols = torch.meshgrid(torch.arange(9), torch.arange(9), indexing="ij")
        offset = (rows // 3 - cols // 3).abs() * 3 + (rows % 3 - cols % 3).abs()
        weights = torch.softmax(q @ k.transpose(-2, -1) * 8**-0.5 + attn.attention_biases[:, offset], dim=-1)
        expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 9, 64))
        torch.testing.assert_close(attn(x), expected, atol=1e-6, rtol=1e-5)


def test_timm_distillation_head_is_folded_into_the_class_head(tmp_path) -> None:
    small = dict(SMALL["efficientformer_l1"], num_classes=10)
    trained = create("efficientformer_l1", **small)
    sd = dict(trained.state_dict())
    sd["head_dist.weight"] = torch.randn(10, 448)
    sd["head_dist.bias"] = torch.randn(10)
    path = tmp_path / "efficientformer.pt"
    torch.save(sd, path)
    model = create("efficientformer_l1", checkpoint=path, **small)
    x = _image()
    with torch.no_grad():
        pooled = trained.forward_features(x).mean(dim=1)
        dist = nn.functional.linear(pooled, sd["head_dist.weight"], sd["head_dist.bias"])
        expected = (trained.head(pooled) + dist) / 2
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)


def test_bridge_hooks_are_the_protocols_qhyvit_owns() -> None:
    """Q-HyViT finds bridges and blocks through its Protocols; a plain ViT declares neither."""
    with torch.device("meta"):
        hybrids = [create("mobilevit_xxs"), create("mobilevitv2_050"), create("efficientformer_l1")]
        vit = create("vit_ti16_224")
    for model in hybrids:
        assert isinstance(model, HasBridgeBlocks) and isinstance(model, HasBlocksInOrder)
        assert [b.attn_name for b in bridges_of(model)] == [b.attn_name for b in model.bridge_blocks()]
    assert not isinstance(vit, HasBridgeBlocks) and bridges_of(vit) == ()


def test_unknown_variant_and_bad_configs_are_user_errors() -> None:
    with pytest.raises(EdgevitError) as err:
        create("mobilevit", variant="mobilevit_xxxl")
    assert all(v in str(err.value) for v in mobilevit.VARIANTS)
    with pytest.raises(EdgevitError) as err:
        create("efficientformer", variant="l7")
    assert all(v in str(err.value) for v in efficientformer.VARIANTS)
    with pytest.raises(EdgevitError, match="unknown model 'hybrid'"):
        create("hybrid")  # the two families no longer share a name
    with pytest.raises(EdgevitError, match="multiple of 64"):
        create("mobilevit_xxs", img_size=224)
    with pytest.raises(EdgevitError, match="num_vit"):
        create("efficientformer_l1", num_vit=0)
    with pytest.raises(EdgevitError, match="multiple of 32"):
        create("efficientformer_l1", img_size=200)
    with pytest.raises(EdgevitError, match="num_heads"):
        create("mobilevit_xxs", num_heads=3)
