"""A tiny MobileViT (the `mobilevit` family at 64 px) with the activation ranges trained hybrids have.

Random init gives BatchNorm identity statistics, so every map is centred and tame; trained hybrids are
not. BN gains of 0.5-2 with a few channels 2× larger, biases that shift some channels 3 off zero, running
statistics that match the data only roughly, a few LayerNorm gains 2× larger: convs then feed maps with
dynamic, one-sided ranges, and the folded conv weights get the per-channel spread that makes per-tensor
weight scales and min-max activation ranges costly. Residual branches end in a small BN gain (0.2×), as
trained ones do; without that, a random stack amplifies any quantization noise ~20 dB on its way out.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgevit.models import create
from edgevit.models.hybrid_layers import InvertedResidual

IMAGE = 64
TINY = dict(
    num_classes=10,
    img_size=IMAGE,
    stem_channels=8,
    channels=(8, 16, 24, 32, 40),
    transformer_dims=(16, 24, 32),
    transformer_depths=(1, 1, 1),
    head_channels=64,
    num_heads=2,
)


@torch.no_grad()
def make_tiny_hybrid(seed: int = 0, version: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    model = create("mobilevit_xxs", version=version, **TINY)
    generator = torch.Generator().manual_seed(seed + 100)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in norms:
        c = bn.num_features
        bn.weight.copy_(0.5 + 1.5 * torch.rand(c, generator=generator))
        bn.weight[torch.randperm(c, generator=generator)[: max(1, c // 8)]] *= 2.0
        bn.bias.normal_(0.0, 0.5, generator=generator)
        bn.bias[torch.randperm(c, generator=generator)[: max(1, c // 8)]] += 3.0
    for block in (m for m in model.modules() if isinstance(m, InvertedResidual) and m.residual):
        block.conv3_1x1.bn.weight.mul_(0.2)
    for ln in (m for m in model.modules() if isinstance(m, nn.LayerNorm)):
        ln.weight[: max(1, ln.normalized_shape[0] // 8)] *= 2.0
    for linear in (m for m in model.modules() if isinstance(m, nn.Linear)):  # trained, not 0.02-init, scale
        linear.weight.normal_(0.0, 0.5 * linear.in_features**-0.5, generator=generator)
    # Running statistics as training leaves them: those of the data (cumulative average over batches),
    # then off by a fraction of a standard deviation and a factor of two in variance.
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    for batch in image_batches(4, batch=16, seed=seed + 200):
        model(batch)
    model.eval()
    for bn in norms:
        c = bn.num_features
        bn.momentum = 0.1
        std = bn.running_var.sqrt()
        bn.running_mean.add_(0.3 * std * torch.randn(c, generator=generator))
        bn.running_var.mul_(2 ** (2 * torch.rand(c, generator=generator) - 1))
    return model


def image_batches(count: int, batch: int = 8, seed: int = 1) -> list[Tensor]:
    """Images with natural-image statistics: 1/f amplitude spectrum, random phase, per-channel, in [0, 1].

    White-noise pixels would make every sample unlike every other at each spatial position, so learned
    rounding would fit the calibration images rather than the data; 1/f images share structure as photos do.
    """
    generator = torch.Generator().manual_seed(seed)
    fy = torch.fft.fftfreq(IMAGE).view(-1, 1)
    fx = torch.fft.rfftfreq(IMAGE).view(1, -1)
    amplitude = 1.0 / (fy.pow(2) + fx.pow(2)).sqrt().clamp(min=1.0 / IMAGE)
    out = []
    for _ in range(count):
        phase = torch.rand(batch, 3, IMAGE, IMAGE // 2 + 1, generator=generator) * 2 * torch.pi
        images = torch.fft.irfft2(amplitude * torch.polar(torch.ones_like(phase), phase), s=(IMAGE, IMAGE))
        lo = images.amin(dim=(2, 3), keepdim=True)
        hi = images.amax(dim=(2, 3), keepdim=True)
        out.append((images - lo) / (hi - lo))
    return out
