"""Fake-quant and the scale search compute a conv with the conv's own padding, whichever way it pads.

EfficientNet-Lite's convs (`Conv2dStaticSamePadding`) pad inside their own `forward`; fake-quant used to call
`_conv_forward`, which skipped that pad, so the quantized model's maps came out smaller than the float ones.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from quant.fake_quant import apply_plan, calibrate
from quant.metrics import model_outputs, outputs_sqnr
from quant.scale_search import SearchConfig, hessian_search

FAST = SearchConfig(grid=(0.6, 0.8, 1.0), rounds=1, max_samples=8)


class _Residual(nn.Module):
    """x + conv(x): runs only if the conv keeps the map's size, as every "same" conv in a real net must."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.head = nn.Conv2d(conv.out_channels, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x + torch.relu(self.conv(x)))


def _static_same(channels: int) -> nn.Conv2d:
    utils = pytest.importorskip("efficientnet_lite_pytorch.utils")
    return utils.Conv2dStaticSamePadding(channels, channels, 3, stride=1, image_size=8, bias=False)


CONVS = {
    "library_static_same": _static_same,
    "same_even_kernel": lambda c: nn.Conv2d(c, c, 4, padding="same"),
    "reflect": lambda c: nn.Conv2d(c, c, 3, padding=1, padding_mode="reflect"),
    "circular": lambda c: nn.Conv2d(c, c, 3, padding=1, padding_mode="circular"),
}


@pytest.mark.parametrize("kind", list(CONVS))
def test_fake_quant_and_scale_search_keep_the_convs_padding(kind: str) -> None:
    torch.manual_seed(0)
    model = _Residual(CONVS[kind](6)).eval()
    calib = [torch.randn(2, 6, 8, 8) for _ in range(4)]
    held = [torch.randn(2, 6, 8, 8) for _ in range(2)]
    reference = model_outputs(model, held)
    ptq = outputs_sqnr(reference, model_outputs(apply_plan(model, calibrate(model, calib, progress=False)), held))
    searched = hessian_search(model, calib, 8, 8, config=FAST, progress=False).plan
    search = outputs_sqnr(reference, model_outputs(apply_plan(model, searched), held))
    print(f"{kind}: W8A8 fake-quant vs fp32 {ptq:.1f} dB, scale search {search:.1f} dB")
    assert ptq > 30.0 and search > 30.0
