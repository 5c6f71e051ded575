from __future__ import annotations

import copy

import pytest
import torch

from quant.errors import QuantError
from quant.fake_quant import apply_plan, calibrate
from quant.metrics import model_outputs, outputs_sqnr
from quant.modules import SmoothedLinear
from quant.plan import QuantPlan
from quant.smoothquant import apply_smoothing_, smooth_quant_
from tests.quant.tiny_vit import TinyViT, make_tiny_vit


@pytest.fixture(scope="module")
def smoothed(calib: list[torch.Tensor]) -> tuple[TinyViT, dict]:
    model = make_tiny_vit()
    records = smooth_quant_(model, calib, progress=False)
    return model, records


def test_fp32_output_unchanged(smoothed: tuple[TinyViT, dict], evalset: list[torch.Tensor]) -> None:
    model, records = smoothed
    reference = model_outputs(make_tiny_vit(), evalset)
    diff = max((a - b).abs().max().item() for a, b in zip(reference, model_outputs(model, evalset), strict=True))
    assert records, "SQ-b smoothed nothing on a model built with outliers"
    assert diff <= 1e-4


def test_folds_into_layernorm_where_it_feeds_only_linears(smoothed: tuple[TinyViT, dict]) -> None:
    model, records = smoothed
    for block in (0, 1):
        for name, norm in ((f"blocks.{block}.attn.qkv", "norm1"), (f"blocks.{block}.mlp.fc1", "norm2")):
            assert records[name].folded_into == f"blocks.{block}.{norm}"
            assert type(model.get_submodule(name)) is torch.nn.Linear
    explicit = [n for n, r in records.items() if r.folded_into == "explicit"]
    assert explicit and all(isinstance(model.get_submodule(n), SmoothedLinear) for n in explicit)
    assert all(0.0 <= r.alpha <= 1.0 for r in records.values())


def test_improves_w8a8_over_plain_ptq(
    smoothed: tuple[TinyViT, dict], calib: list[torch.Tensor], evalset: list[torch.Tensor]
) -> None:
    model, records = smoothed
    plain = make_tiny_vit()
    reference = model_outputs(plain, evalset)
    results = {}
    for w, a in ((8, 8), (8, 6)):
        ptq = apply_plan(plain, calibrate(plain, calib, weight_bits=w, act_bits=a, progress=False))
        sqb = apply_plan(model, calibrate(model, calib, weight_bits=w, act_bits=a, progress=False))
        results[(w, a)] = (
            outputs_sqnr(reference, model_outputs(ptq, evalset)),
            outputs_sqnr(reference, model_outputs(sqb, evalset)),
        )
    for (w, a), (ptq_db, sqb_db) in results.items():
        print(f"W{w}A{a}: plain PTQ {ptq_db:.1f} dB, SQ-b {sqb_db:.1f} dB (+{sqb_db - ptq_db:.1f})")
    assert results[(8, 8)][1] > results[(8, 8)][0] + 2.0
    assert results[(8, 6)][1] > results[(8, 6)][0] + 5.0


def test_plan_records_replay_on_a_fresh_checkpoint(smoothed: tuple[TinyViT, dict], calib: list[torch.Tensor]) -> None:
    model, records = smoothed
    plan = calibrate(model, calib, progress=False).with_smoothing(records)
    assert plan["blocks.0.attn.qkv"].method == "sq-b+ptq"
    reloaded = QuantPlan.from_json(plan.to_json())
    fresh = apply_smoothing_(
        make_tiny_vit(), {n: lq.smoothing for n, lq in reloaded.layers.items() if lq.smoothing is not None}
    )
    x = calib[0]
    assert torch.allclose(fresh(x), model(x), atol=1e-6)
    assert torch.equal(apply_plan(fresh, reloaded)(x), apply_plan(model, plan)(x))


def test_refuses_non_linear_layer_by_name(calib: list[torch.Tensor]) -> None:
    with pytest.raises(QuantError, match="SQ-b handles nn.Linear only: layer 'patch_embed' is Conv2d"):
        smooth_quant_(make_tiny_vit(), calib, layers=["patch_embed"], progress=False)


def test_refuses_to_smooth_twice(smoothed: tuple[TinyViT, dict], calib: list[torch.Tensor]) -> None:
    model, records = smoothed
    explicit = next(n for n, r in records.items() if r.folded_into == "explicit")
    with pytest.raises(QuantError, match=f"'{explicit}' is already smoothed"):
        smooth_quant_(copy.deepcopy(model), calib, progress=False)
