from __future__ import annotations

import pytest
import torch
from torch import nn

from edgevit.models import create
from quant.bn_fold import conv_bn_pairs, fold_batchnorm
from quant.errors import QuantError
from tests.quant.tiny_hybrid import image_batches, make_tiny_hybrid


def test_folded_hybrid_equals_original_in_eval_mode() -> None:
    model = make_tiny_hybrid()
    x = image_batches(2, seed=3)
    folded, pairs = fold_batchnorm(model, x[0])
    assert len(pairs) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert ("stages.2.0.conv3_1x1.conv", "stages.2.0.conv3_1x1.bn") in pairs
    conv = folded.get_submodule("stages.2.0.conv3_1x1.conv")
    assert conv.bias is not None  # a bias-free conv gains the BN shift as its bias
    with torch.no_grad():
        for batch in x:  # including a batch the fold never saw
            ref, out = model(batch), folded(batch)
            assert (ref - out).abs().max().item() <= 1e-5 * max(ref.abs().max().item(), 1.0)
    # The input model is untouched: still BatchNorm, still bias-free.
    assert isinstance(model.get_submodule("stages.2.0.conv3_1x1.bn"), nn.BatchNorm2d)
    assert model.get_submodule("stages.2.0.conv3_1x1.conv").bias is None


def test_conv_with_bias_folds_too() -> None:
    # EfficientFormer's conv MLP and downsamples have biased convs before their BatchNorm.
    model = create(
        "efficientformer_l1",
        num_classes=10,
        img_size=64,
        widths=(8, 16, 24, 32),
        depths=(1, 1, 1, 2),
        key_dim=8,
        num_heads=2,
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.normal_(0.0, 1.0, generator=generator)
            bn.running_var.uniform_(0.2, 3.0, generator=generator)
            bn.weight.uniform_(0.5, 2.0, generator=generator)
            bn.bias.normal_(0.0, 1.0, generator=generator)
    x = torch.randn(4, 3, 64, 64, generator=generator)
    folded, pairs = fold_batchnorm(model, x)
    assert ("stages.1.blocks.0.mlp.fc1", "stages.1.blocks.0.mlp.norm1") in pairs
    with torch.no_grad():
        ref, out = model(x), folded(x)
    assert (ref - out).abs().max().item() <= 1e-5 * max(ref.abs().max().item(), 1.0)


class _SharedConvOutput(nn.Module):
    """The conv output feeds the BN and, through a functional add, the output: not foldable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_refuses_a_fold_that_would_change_the_model() -> None:
    model = _SharedConvOutput().eval()
    with torch.no_grad():
        model.bn.running_var.fill_(4.0)
    with pytest.raises(QuantError, match=r"changed the model output.*\['conv'\]"):
        fold_batchnorm(model, torch.randn(2, 3, 8, 8))


def test_bn_not_fed_by_a_conv_stays() -> None:
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1), nn.ReLU(), nn.BatchNorm2d(4)).eval()
    x = torch.randn(2, 3, 8, 8)
    assert conv_bn_pairs(model, x) == []  # the second BN reads the ReLU's output, not the conv's
    folded, pairs = fold_batchnorm(model, x)
    assert pairs == [] and isinstance(folded[0], nn.BatchNorm2d)
