from __future__ import annotations

import functools

import pytest
import torch

from quant.errors import QuantError
from quant.observers import (
    MinMaxObserver,
    MSEObserver,
    PercentileObserver,
    fake_quantize,
    make_observer,
    qparams_from_range,
    quant_range,
)


def test_quant_range_restricted_symmetric_full_asymmetric() -> None:
    assert quant_range(8, symmetric=True) == (-127, 127)
    assert quant_range(8, symmetric=False) == (-128, 127)
    assert quant_range(4, symmetric=True) == (-7, 7)
    assert quant_range(4, symmetric=False) == (-8, 7)
    with pytest.raises(QuantError, match="bit-width 1"):
        quant_range(1, symmetric=True)


def test_asymmetric_qparams_by_hand() -> None:
    # [-1, 2] over 255 steps: scale 3/255; zero maps to -128 + 1/(3/255) = -128 + 85 = -43.
    scale, zp = qparams_from_range(torch.tensor([-1.0]), torch.tensor([2.0]), 8, symmetric=False)
    assert scale.item() == pytest.approx(3 / 255)
    assert zp.item() == -43


def test_symmetric_qparams_by_hand() -> None:
    scale, zp = qparams_from_range(torch.tensor([-127.0]), torch.tensor([50.0]), 8, symmetric=True)
    assert scale.item() == pytest.approx(1.0)
    assert zp.item() == 0


def test_range_widened_to_zero_keeps_zero_point_in_range() -> None:
    # An all-positive activation: without widening, zero-point would be -128 - 100/scale, far out of int8.
    scale, zp = qparams_from_range(torch.tensor([100.0]), torch.tensor([200.0]), 8, symmetric=False)
    assert scale.item() == pytest.approx(200 / 255)
    assert zp.item() == -128
    scale, zp = qparams_from_range(torch.tensor([-300.0]), torch.tensor([-5.0]), 8, symmetric=False)
    assert zp.item() == 127


def test_zero_points_never_overflow_on_random_ranges() -> None:
    g = torch.Generator().manual_seed(0)
    lo = -(torch.rand(1000, generator=g) ** 4) * 1e3
    hi = torch.rand(1000, generator=g) ** 4 * 1e3
    for bits in (2, 4, 6, 8, 16):
        qmin, qmax = quant_range(bits, symmetric=False)
        _, zp = qparams_from_range(lo, hi, bits, symmetric=False)
        assert int(zp.min()) >= qmin and int(zp.max()) <= qmax


def test_constant_zero_tensor_gets_a_usable_scale() -> None:
    obs = MinMaxObserver()
    obs.update(torch.zeros(16))
    scale, zp = obs.qparams(8)
    assert scale.item() > 0
    assert fake_quantize(torch.zeros(4), scale, zp, -128, 127).abs().max().item() == 0.0


def test_per_channel_minmax_by_hand() -> None:
    w = torch.tensor([[-1.0, 2.0, 0.5], [0.0, 4.0, -3.0]])
    obs = MinMaxObserver(symmetric=True, ch_axis=0)
    obs.update(w)
    scale, zp = obs.qparams(8)
    assert scale.tolist() == pytest.approx([2 / 127, 4 / 127])
    assert zp.tolist() == [0, 0]
    # Inside the range, the round-trip error is at most half a step per channel.
    err = (fake_quantize(w, scale, zp, -127, 127, ch_axis=0) - w).abs()
    assert (err <= scale[:, None] / 2 + 1e-7).all()


def test_minmax_accumulates_over_batches() -> None:
    obs = MinMaxObserver()
    obs.update(torch.tensor([-1.0, 0.5]))
    obs.update(torch.tensor([3.0]))
    assert (obs.min_val.item(), obs.max_val.item()) == (-1.0, 3.0)
    assert obs.num_updates == 2


def test_percentile_ignores_a_single_outlier() -> None:
    x = torch.cat([torch.linspace(0, 1, 10000), torch.tensor([1000.0])])
    pct = PercentileObserver(percentile=99.9)
    mm = MinMaxObserver()
    pct.update(x)
    mm.update(x)
    assert pct.qparams(8)[0].item() < 1.01 / 255
    assert mm.qparams(8)[0].item() == pytest.approx(1000 / 255)
    assert pct.label == "percentile(99.9)"


def test_mse_clips_heavy_tails_and_lowers_error() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, generator=g)
    x[0] = 40.0
    mse, mm = MSEObserver(symmetric=True), MinMaxObserver(symmetric=True)
    mse.update(x)
    mm.update(x)

    def err(obs: MinMaxObserver | MSEObserver) -> float:
        scale, zp = obs.qparams(4)
        return (fake_quantize(x, scale, zp, -7, 7) - x).pow(2).mean().item()

    assert mse.qparams(4)[0].item() < mm.qparams(4)[0].item() / 4
    assert err(mse) < err(mm) / 10


def test_sampled_observer_keeps_a_bounded_sample_of_all_batches() -> None:
    obs = MSEObserver(max_samples=100)
    for i in range(5):
        obs.update(torch.full((1000,), float(i)))
    assert obs.samples.shape == (1, 100)
    assert set(obs.samples.unique().tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0}


def test_make_observer_by_name_and_factory() -> None:
    assert isinstance(make_observer("omse", symmetric=False, ch_axis=None), MSEObserver)
    weight_obs = make_observer(
        functools.partial(PercentileObserver, percentile=99.0), symmetric=True, ch_axis=0, keep_all=True
    )
    assert isinstance(weight_obs, PercentileObserver) and weight_obs.max_samples is None
    with pytest.raises(QuantError, match="unknown observer 'histogram'"):
        make_observer("histogram", symmetric=False, ch_axis=None)
    with pytest.raises(QuantError, match="seen no data"):
        MinMaxObserver().qparams(8)
