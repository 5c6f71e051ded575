from __future__ import annotations

import copy

import torch
from torch import nn

from quant.awq import awq_scale_
from quant.fake_quant import apply_plan, collect_stats
from quant.metrics import model_outputs, outputs_sqnr
from tests.quant.tiny_vit import make_tiny_vit


def test_keeps_fp32_outputs_and_folds_into_layernorms(calib: list[torch.Tensor], evalset: list[torch.Tensor]) -> None:
    model = make_tiny_vit()
    reference = model_outputs(model, evalset)
    records = awq_scale_(model, calib, group_size=16)
    diff = max((a - b).abs().max().item() for a, b in zip(reference, model_outputs(model, evalset), strict=True))
    assert diff <= 1e-4
    assert records, "AWQ scaled nothing on a model built with outliers"
    # Only LayerNorm-fed Linears by default: nothing new to lower.
    assert all(r.folded_into.endswith(("norm1", "norm2")) for r in records.values())
    assert all(type(model.get_submodule(n)) is nn.Linear for n in records)


class _OutlierLayer(nn.Module):
    """LayerNorm → Linear where two input channels are ~30× the rest: the case AWQ is for."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.norm = nn.LayerNorm(64)
        self.fc = nn.Linear(64, 64)
        with torch.no_grad():
            self.norm.weight[:2] = 30.0
            self.fc.weight.copy_(torch.randn(64, 64, generator=gen) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x))


def _w4a8_db(model: nn.Module, calib: list[torch.Tensor], held: list[torch.Tensor], reference: list) -> float:
    stats = collect_stats(model, calib, progress=False).use_groups({4: 32}, "mse")
    return outputs_sqnr(reference, model_outputs(apply_plan(model, stats.plan(4, 8)), held))


def test_lowers_4bit_error_on_an_outlier_channel() -> None:
    gen = torch.Generator().manual_seed(1)
    data = [torch.randn(2, 16, 64, generator=gen) for _ in range(12)]
    calib, held = data[:8], data[8:]
    model = _OutlierLayer().eval()
    reference = model_outputs(model, held)
    before = _w4a8_db(model, calib, held, reference)
    scaled = copy.deepcopy(model)
    records = awq_scale_(scaled, calib, group_size=32)
    assert records["fc"].folded_into == "norm" and records["fc"].alpha > 0
    after = _w4a8_db(scaled, calib, held, reference)
    assert after > before + 1.0, (before, after)


def _w8a8_db(model: nn.Module, calib: list[torch.Tensor], held: list[torch.Tensor], reference: list) -> float:
    stats = collect_stats(model, calib, progress=False)  # per-channel min-max weights: the uniform 8-bit plan
    return outputs_sqnr(reference, model_outputs(apply_plan(model, stats.plan(8, 8)), held))


def test_per_channel_objective_lowers_8bit_error_on_an_outlier_channel() -> None:
    """The two outlier channels set the per-tensor 8-bit input grid: dividing them narrows it for every channel."""
    gen = torch.Generator().manual_seed(1)
    data = [torch.randn(2, 16, 64, generator=gen) for _ in range(12)]
    calib, held = data[:8], data[8:]
    model = _OutlierLayer().eval()
    with torch.no_grad():  # as trained: the outlier channels' weight columns are small, so every channel counts
        model.fc.weight[:, :2] /= 30.0
    reference = model_outputs(model, held)
    before = _w8a8_db(model, calib, held, reference)
    scaled = copy.deepcopy(model)
    records = awq_scale_(scaled, calib, bits=8, group_size=None)
    assert records["fc"].folded_into == "norm" and records["fc"].alpha > 0
    assert max((a - b).abs().max().item() for a, b in zip(reference, model_outputs(scaled, held), strict=True)) < 1e-4
    after = _w8a8_db(scaled, calib, held, reference)
    assert after > before + 3.0, (before, after)
