from __future__ import annotations

import pytest
import torch
from torch import nn

from quant.bn_fold import fold_batchnorm
from quant.errors import QuantError
from quant.fake_quant import apply_plan, calibrate
from quant.layer_ops import quantizes_output
from quant.layer_search import guard_zero_point
from quant.metrics import model_outputs, outputs_sqnr
from quant.observers import fake_quantize, quant_range
from quant.plan import QuantPlan
from quant.scale_search import SearchConfig, SearchResult, hessian_search
from tests.quant.tiny_hybrid import image_batches, make_tiny_hybrid

FAST = SearchConfig(grid=tuple(round(0.3 + 0.7 * i / 17, 3) for i in range(18)), max_samples=16)


@pytest.fixture(scope="module")
def hybrid() -> tuple[nn.Module, list[torch.Tensor], list[torch.Tensor]]:
    calib = image_batches(16, seed=1)
    folded, _ = fold_batchnorm(make_tiny_hybrid(), calib[0])
    return folded, calib, image_batches(8, seed=2)


@pytest.fixture(scope="module")
def searched(hybrid) -> dict[tuple[int, int], SearchResult]:
    model, calib, _ = hybrid
    return {(w, a): hessian_search(model, calib, w, a, config=FAST, progress=False) for w, a in ((4, 8), (6, 6))}


def test_beats_min_max_on_model_output(hybrid, searched) -> None:
    model, calib, evalset = hybrid
    reference = model_outputs(model, evalset)
    for (w, a), result in searched.items():
        ptq = calibrate(model, calib, weight_bits=w, act_bits=a, progress=False)
        ptq_db = outputs_sqnr(reference, model_outputs(apply_plan(model, ptq), evalset))
        search_db = outputs_sqnr(reference, model_outputs(apply_plan(model, result.plan), evalset))
        print(f"W{w}A{a}: min-max PTQ {ptq_db:.2f} dB, Hessian-guided search {search_db:.2f} dB")
        assert search_db > ptq_db + 1.0


def test_never_worse_than_min_max_on_its_own_loss(searched) -> None:
    for result in searched.values():
        assert all(r.loss <= r.minmax_loss for r in result.layers.values())
        assert sum(r.gain_db > 0.5 for r in result.layers.values()) > len(result.layers) // 2


def test_plan_is_complete_and_serialisable(hybrid, searched) -> None:
    model, _, _ = hybrid
    plan = searched[(4, 8)].plan
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert list(plan.layers) == convs  # every layer, in execution order
    assert {layer.method for layer in plan.layers.values()} == {"qhyvit"}
    for layer in plan.layers.values():
        assert layer.weight is not None and layer.weight.symmetric and layer.weight.bits == 4
        assert layer.inputs[0].granularity == "per_tensor" and layer.inputs[0].bits == 8
    again = QuantPlan.from_json(plan.to_json())
    assert again.layers["stages.2.1.transformer.0.attn.qkv"] == plan.layers["stages.2.1.transformer.0.attn.qkv"]


def test_activation_and_output_grids_are_what_the_runtimes_hold(hybrid, searched) -> None:
    """Every conv calibration gives an output grid gets one here too (QLinearConv needs it), and a symmetric activation
    grid spans the full int8 range: onnxruntime saturates at -128/127, so a restricted ±127 grid clipped at +127 in
    the plan and at +128 in the artifact (a qhyvit artifact was 22 dB from its own plan, 139 dB with full range)."""
    model, _, _ = hybrid
    plan = searched[(4, 8)].plan
    graded = [n for n, lq in plan.layers.items() if lq.output is not None]
    assert graded == [n for n in plan.layers if quantizes_output(model.get_submodule(n))] and graded
    grids = [q for lq in plan.layers.values() for q in (*lq.inputs, lq.output) if q is not None]
    assert any(q.symmetric for q in grids)
    assert all((q.quant_min, q.quant_max) == (-128, 127) for q in grids)


def test_guard_clamps_an_overflowing_zero_point() -> None:
    qmin, qmax = quant_range(8, symmetric=False)
    scale, zp, over = guard_zero_point(torch.tensor([2.0, -1.0]), torch.tensor([10.0, 1.0]), 8)
    assert over.tolist() == [True, False]
    assert zp[0].item() == qmin and qmin <= zp[1].item() <= qmax
    # Clamped, 0 is still exactly representable, and the grid starts there: [2, 10] loses its top instead.
    zero = fake_quantize(torch.zeros(1), scale[:1], zp[:1], qmin, qmax)
    assert zero.item() == 0.0
    top = fake_quantize(torch.tensor([10.0]), scale[:1], zp[:1], qmin, qmax)
    assert top.item() == pytest.approx(8.0, rel=1e-6)


class _Offset(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x) * 8.0 + 0.5  # one-sided, in (0.5, 8.5): excludes 0


def test_one_sided_input_gets_valid_asymmetric_qparams() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), _Offset(), nn.Linear(32, 8)).eval()
    batches = [torch.randn(64, 16) * 2 for _ in range(4)]
    result = hessian_search(model, batches, 8, 8, config=FAST, progress=False)
    q = result.plan["2"].inputs[0]
    assert not q.symmetric  # symmetric would spend half its levels on negatives that never occur
    assert q.quant_min <= q.zero_point[0] <= q.quant_max
    scale, zero_point = q.tensors()
    assert fake_quantize(torch.zeros(1), scale, zero_point, q.quant_min, q.quant_max).item() == 0.0


def test_per_channel_weights_chosen_when_one_channel_dominates() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8)).eval()
    with torch.no_grad():
        model[0].weight[3] *= 50.0
    result = hessian_search(model, [torch.randn(64, 16) for _ in range(2)], 4, 8, config=FAST, progress=False)
    assert result.layers["0"].weight_granularity == "per_channel"


def test_per_channel_activations_are_an_opt_in_that_tames_outlier_channels() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8)).eval()
    scale = torch.ones(16)
    scale[5] = 100.0
    batches = [torch.randn(64, 16) * scale for _ in range(2)]
    tensor_only = hessian_search(model, batches, 8, 6, config=FAST, progress=False)
    opt_in = SearchConfig(grid=FAST.grid, max_samples=FAST.max_samples, act_granularities=("per_tensor", "per_channel"))
    with_channels = hessian_search(model, batches, 8, 6, config=opt_in, progress=False)
    q = with_channels.plan["0"].inputs[0]
    assert tensor_only.plan["0"].inputs[0].granularity == "per_tensor"
    assert q.granularity == "per_channel" and q.ch_axis == 1 and len(q.scale) == 16
    assert with_channels.layers["0"].loss < 0.5 * tensor_only.layers["0"].loss


def test_bad_config_is_refused() -> None:
    with pytest.raises(QuantError, match="grid"):
        SearchConfig(grid=(0.0, 1.0))
    with pytest.raises(QuantError, match="at least 1"):
        SearchConfig(rounds=0)


def test_memory_bound_splits_the_search_without_changing_it() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 4)).eval()
    batches = [torch.randn(32, 16) for _ in range(2)]
    whole = hessian_search(model, batches, 4, 8, config=FAST, progress=False)
    one_layer_at_a_time = SearchConfig(grid=FAST.grid, max_samples=FAST.max_samples, max_bytes=1)
    split = hessian_search(model, batches, 4, 8, config=one_layer_at_a_time, progress=False)
    assert list(split.plan.layers) == ["0", "2", "4"]
    assert split.plan.layers == whole.plan.layers
