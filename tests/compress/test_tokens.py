"""Token compression: static shapes, identity at keep 1, the FLOPs budget, EfficientTAM's encoder, and the
saliency fidelity of the three methods on DINOv2-S's real weights."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgevit.compress.tokens import METHODS, TokenBudgetError, TokenSettings, compress_tokens, count_flops
from edgevit.models import create
from quant.metrics import sqnr


def tiny_vit(pool: str = "avg"):
    torch.manual_seed(0)
    return create("vit", "ti16_224", depth=3, img_size=64, global_pool=pool).eval()


def image(seed: int = 0, size: int = 64) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method", METHODS)
def test_keep_one_leaves_the_output_unchanged(method):
    model = tiny_vit()
    x = torch.cat([image(1), image(2)])
    with torch.no_grad():
        before = model(x)
    report = compress_tokens(model, TokenSettings(method, keep=1.0), (image(),))
    with torch.no_grad():
        assert torch.equal(model(x), before)
    assert report.flops_after == report.flops_before
    assert report.tokens == {"model": [16, 16, 16]}


@pytest.mark.parametrize("method", METHODS)
def test_flops_fall_as_requested_and_shapes_stay_static(method):
    model = tiny_vit()
    report = compress_tokens(model, TokenSettings(method, flops=0.25), (image(),))
    assert report.reduction >= 0.25
    assert count_flops(model, (image(),)) == report.flops_after  # what runs is what was measured
    counts = report.tokens["model"]
    assert counts[0] < 16 and counts == sorted(counts, reverse=True)
    program = torch.export.export(model, (image(),))
    for node in program.graph.nodes:
        value = node.meta.get("val")
        if isinstance(value, torch.Tensor):
            assert all(isinstance(d, int) for d in value.shape), f"{node.name} has a dynamic shape {value.shape}"
    x = image(3)
    with torch.no_grad():
        assert torch.allclose(program.module()(x), model(x), atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_dense_restore_adds_only_what_came_after_compression(method):
    """With every update after the first attention zeroed, the restored grid is each token exactly as it was
    compressed: a merged or dropped token keeps its own state (a copy of its partner would not)."""
    model = tiny_vit()
    with torch.no_grad():
        for i, block in enumerate(model.blocks):
            block.mlp.fc2.weight.zero_()
            block.mlp.fc2.bias.zero_()
            if i > 0:
                block.attn.proj.weight.zero_()
                block.attn.proj.bias.zero_()
    x = image(1)
    with torch.no_grad():
        before = model.forward_features(x)
    compress_tokens(model, TokenSettings(method, keep=0.5), (image(),))
    with torch.no_grad():
        after = model.forward_features(x)
    assert torch.allclose(after, before, atol=1e-5)


def test_a_budget_no_keep_ratio_reaches_is_refused():
    with pytest.raises(TokenBudgetError, match="at most"):
        compress_tokens(tiny_vit(), TokenSettings("tome", flops=0.9), (image(),))


def test_efficienttam_encoder_compresses_only_global_blocks_and_keeps_its_output_shape():
    from edgevit.compress.tokens.stacks import CompressedGlobalBlock

    torch.manual_seed(0)
    model = create("efficienttam", "ti_512", image_size=128, depth=4, window_block_indexes=(0, 1, 3)).eval()
    unit = next(u for u in model.deploy_units() if u.name == "image_encoder")
    x = unit.example_inputs
    before = unit.run_eager(*x)[0]
    report = compress_tokens(unit.module, TokenSettings("transform", keep=0.5), x)
    after = unit.run_eager(*x)[0]
    blocks = model.image_encoder.trunk.blocks
    assert [isinstance(b, CompressedGlobalBlock) for b in blocks] == [False, False, True, False]
    assert after.shape == before.shape and not torch.equal(after, before)
    assert report.tokens["encoder.trunk"] == [64, 64, 32, 64]
    assert report.flops_after < report.flops_before
    assert sqnr(before, after) > 10


def test_merging_keeps_dinov2_saliency_better_than_topk_pruning_at_40_percent_fewer_flops():
    """On real weights and photos the transform's temperature was NOT chosen on (scikit-learn's two sample photos,
    two of scikit-image's), −40 % FLOPs from block 0: saliency SQNR against the uncompressed model. ToMe's merging
    must keep clearly more than dropping tokens (top-k), and the transform must stay a usable map. The issue's goal
    — transform above both — is not met on held-out data: over 42 photos and frames ToMe leads and transform is
    second (benchmarks/results/shrink_tokens.md), and on these four transform is even below top-k (measured:
    tome 16.8, topk 13.7, transform 11.8 dB), so no ranking of transform is asserted."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    def prep(rgb: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(rgb[..., :3])).float().permute(2, 0, 1)[None] / 255.0
        x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
        return (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
            1, 3, 1, 1
        )

    held_out = [*load_sample_images().images, data.immunohistochemistry(), data.hubble_deep_field()]
    photos = torch.cat([prep(rgb) for rgb in held_out])
    base = create("dinov2_s_focus").eval()
    with torch.no_grad():
        reference = base(photos)
    found = {}
    for method in METHODS:
        model = copy.deepcopy(base)
        report = compress_tokens(model, TokenSettings(method, flops=0.4), (photos[:1],))
        assert report.reduction >= 0.4
        with torch.no_grad():
            found[method] = sqnr(reference, model(photos))
    assert found["tome"] > found["topk"] + 1.0 and found["transform"] > 8.0, found
