"""ExecuTorch int8 of a conv behind a zero pad (EfficientNet-Lite0's "same"-padded stem)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from converters import DeployUnit, load_runner
from converters.parity import sqnr_db
from converters.quantized import MIN_SQNR_VS_REFERENCE_DB, convert_quantized
from quant.fake_quant import calibrate


class PaddedStem(nn.Module):
    """EfficientNet-Lite's stem and first pointwise conv: static "same" padding as an asymmetric ZeroPad2d before
    a stride-2 3x3 conv, ReLU6, then a 1x1 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))
        self.stem = nn.Conv2d(3, 8, 3, stride=2)
        self.project = nn.Conv2d(8, 4, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.project(nn.functional.relu6(self.stem(self.pad(image))))


def test_executorch_int8_runs_a_conv_behind_a_zero_pad(tmp_path) -> None:
    """Lowered in one partition, XNNPACK's channels-last pass moved the pad's input to NHWC but left the pad's
    NCHW paddings, and the written program failed when run ("Propagating input shapes failed")."""
    torch.manual_seed(0)
    model = PaddedStem().eval()
    g = torch.Generator().manual_seed(1)
    images = [torch.randn(1, 3, 16, 16, generator=g) for _ in range(7)]
    unit = DeployUnit("stem", model, (images[0],), ("image",), ("map",))
    plan = calibrate(model, [(x,) for x in images[:4]], progress=False)
    art = convert_quantized(unit, "executorch", plan, tmp_path, parity_inputs=[(x,) for x in images[4:]])
    assert art.parity["map"].sqnr_db >= MIN_SQNR_VS_REFERENCE_DB
    assert art.facts["quant"]["xnnpack_gemms"]["conv"]["inputs"] == {"qdint8": 2}  # both convs int8
    runner = load_runner("executorch", art.path, num_threads=1)
    got = np.concatenate([runner.run(x.numpy())[0] for x in images[4:]])
    want = np.concatenate([model(x).detach().numpy() for x in images[4:]])
    assert sqnr_db(want, got) >= 30.0
