from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from quant.adaround import AdaRoundLayer
from quant.bn_fold import fold_batchnorm
from quant.errors import QuantError
from quant.fake_quant import FakeQuantize, FakeQuantLayer, apply_plan, calibrate
from quant.plan import QuantPlan
from quant.reconstruction import ReconConfig, ReconUnit, capture, reconstruct
from quant.scale_search import SearchConfig, hessian_search
from tests.quant.tiny_hybrid import image_batches, make_tiny_hybrid

FAST = SearchConfig(grid=tuple(round(0.3 + 0.7 * i / 17, 3) for i in range(18)), max_samples=16)
UNITS = [ReconUnit("stages.2.0", ("stages.2.0",)), ReconUnit("stages.2.1", ("stages.2.1",))]


@pytest.fixture(scope="module")
def hybrid_w4() -> tuple[nn.Module, list[torch.Tensor], QuantPlan]:
    calib = image_batches(16, seed=1)
    folded, _ = fold_batchnorm(make_tiny_hybrid(), calib[0])
    plan = hessian_search(folded, calib, 4, 8, config=FAST, progress=False).plan
    names = [n for n in plan.layers if any(u.contains(n) for u in UNITS)]
    return folded, calib, plan.subset(names)


@pytest.fixture(scope="module")
def reconstructed(hybrid_w4) -> tuple[nn.Module, list]:
    model, calib, plan = hybrid_w4
    model = copy.deepcopy(model)
    reports = reconstruct(model, calib, plan, UNITS, ReconConfig(iters=100), progress=False)
    return model, reports


def test_learned_rounding_beats_nearest_at_w4(reconstructed) -> None:
    _, reports = reconstructed
    for r in reports:
        nearest, learned = -10 * math.log10(r.nearest_error), -10 * math.log10(r.learned_error)
        print(f"{r.unit}: nearest {nearest:.2f} dB -> learned {learned:.2f} dB ({r.kept})")
    assert all(r.learned_error <= r.nearest_error for r in reports)
    attention = reports[1]  # the MobileViT block: the most weights, the clearest gain
    assert attention.kept == "learned" and attention.gain_db > 0.2


def test_learned_rounding_on_a_plain_linear() -> None:
    # AdaRound's home ground: one layer, correlated inputs, min-max scales. A sample is a row here, so
    # larger batches; one layer has few outputs per weight, so a lighter regulariser than for blocks.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32)).eval()
    mix = torch.randn(64, 64) * 0.3
    batches = [torch.randn(256, 64) @ mix for _ in range(8)]
    plan = calibrate(model, batches, weight_bits=4, act_bits=16, progress=False)
    config = ReconConfig(iters=100, batch_size=64, reg_weight=0.01)
    (report,) = reconstruct(model, batches, plan, [ReconUnit("0", ("0",))], config, progress=False)
    print(
        f"Linear 64->32 W4: nearest {-10 * math.log10(report.nearest_error):.2f} dB, learned "
        f"{-10 * math.log10(report.learned_error):.2f} dB"
    )
    assert report.gain_db > 1.0


def test_weights_are_on_the_plans_grid(hybrid_w4, reconstructed) -> None:
    original, _, plan = hybrid_w4
    model, reports = reconstructed
    flipped = 0
    for name, layer in plan.layers.items():
        q = layer.weight
        w = model.get_submodule(name).weight.detach()
        scale, zero_point = q.tensors()
        shape = [-1] + [1] * (w.dim() - 1) if q.ch_axis == 0 else [1] * w.dim()
        integers = torch.round(w / scale.view(shape)) + zero_point.view(shape)
        # The invariant a target's own quantizer relies on: quantizing again with the plan's scale gives the
        # same integers, and dequantizing them gives the weight back bit for bit.
        assert torch.equal(FakeQuantize(q)(w), w)
        assert torch.equal((integers - zero_point.view(shape)) * scale.view(shape), w)
        assert integers.min() >= q.quant_min and integers.max() <= q.quant_max
        w0 = original.get_submodule(name).weight.detach()
        flipped += int((torch.round(w0 / scale.view(shape)).clamp(q.quant_min, q.quant_max) != integers).sum())
    assert flipped > 0  # learned rounding did move weights off nearest rounding
    # Applying the plan quantizes nothing further: the fake-quant weight is the reconstructed weight.
    fq = apply_plan(model, plan)
    for name in plan.layers:
        layer = fq.get_submodule(name)
        assert isinstance(layer, FakeQuantLayer) and torch.equal(layer.weight_q, layer.inner.weight)


def test_model_comes_back_float_with_gradients_as_before(reconstructed) -> None:
    model, _ = reconstructed
    assert not any(isinstance(m, FakeQuantLayer | AdaRoundLayer) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


def test_capture_stops_at_the_boundary(hybrid_w4) -> None:
    model, calib, _ = hybrid_w4
    (x,) = capture(model, calib[:2], "stages.2.1", "inputs")
    (y,) = capture(model, calib[:2], "stages.2.1", "output")
    assert x.shape[0] == y.shape[0] == 16
    with torch.no_grad():
        assert torch.allclose(model.get_submodule("stages.2.1")(x), y, atol=1e-5)


def test_units_must_not_share_layers(hybrid_w4) -> None:
    model, calib, plan = hybrid_w4
    units = [ReconUnit("a", ("stages.2",)), ReconUnit("b", ("stages.2.1",))]
    with pytest.raises(QuantError, match="is in two units"):
        reconstruct(copy.deepcopy(model), calib, plan, units, ReconConfig(iters=1), progress=False)
    with pytest.raises(QuantError, match="'stages.9'.*not in the model"):
        reconstruct(model, calib, plan, [ReconUnit("x", ("stages.9",))], ReconConfig(iters=1), progress=False)
