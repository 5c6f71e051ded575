"""LiteRT blockwise 4-bit: a plan's per-group Linear weights as blockwise INT4 FULLY_CONNECTED, the plan's integers.

A two-Linear token MLP keeps the conversions short; the tiny ViT's LayerNorm gains are folded into its
FULLY_CONNECTED weights by the converter, which the lowering must refuse (checked on one LayerNorm + Linear).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from converters import ConversionError, DeployUnit, load_runner
from converters.parity import sqnr_db
from converters.quantized import convert_quantized
from converters.targets.tflite.blockwise import held_blockwise, plan_weights_model
from quant.fake_quant import calibrate, collect_stats
from quant.groupwise import groupwise_qparams, quantize_weight_ints
from quant.plan import QuantPlan


class TokenMlp(nn.Module):
    def __init__(self, norm: bool = False) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(64) if norm else nn.Identity()
        self.fc1, self.act, self.fc2 = nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


def _tokens(count: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 16, 64, generator=g) for _ in range(count)]


def _setup(norm: bool = False) -> tuple[TokenMlp, DeployUnit, QuantPlan]:
    torch.manual_seed(0)
    model = TokenMlp(norm).eval()
    if norm:
        with torch.no_grad():
            model.norm.weight.uniform_(0.5, 3.0)  # a trained LayerNorm's gain: the converter folds it into fc1
    unit = DeployUnit("mlp", model, tuple(_tokens(1, 3)), ("tokens",), ("out",))
    plan = calibrate(model, _tokens(4, 1), progress=False)
    grouped = {
        name: dataclasses.replace(lq, weight=groupwise_qparams(model.get_submodule(name).weight, 4, 32))
        for name, lq in plan.layers.items()
    }
    return model, unit, dataclasses.replace(plan, layers=grouped)


def test_litert_blockwise_holds_the_plans_integers_and_runs(tmp_path) -> None:
    model, unit, plan = _setup()
    held_out = [(x,) for x in _tokens(4, 7)]
    art = convert_quantized(unit, "tflite", plan, tmp_path, parity_inputs=held_out)
    quant = art.facts["quant"]
    assert art.precision == "w4a8" and quant["blockwise_int4_layers"] == 2 and quant["group_sizes"] == [32]
    # Read back from the file: two blockwise INT4 weights, each exactly one plan layer's integers.
    held = sorted(tuple(ints.flatten().tolist()) for ints, _ in held_blockwise(art.path))
    planned = sorted(
        tuple(quantize_weight_ints(model.get_submodule(n).weight, lq.weight).flatten().tolist())
        for n, lq in plan.layers.items()
    )
    assert held == planned
    runner = load_runner("tflite", art.path, num_threads=1)
    got = np.concatenate([runner.run(x.numpy())[0].reshape(-1) for (x,) in held_out])
    simulated = plan_weights_model(model, plan, list(plan.layers))
    want = torch.cat([simulated(x).reshape(-1) for (x,) in held_out]).detach().numpy()
    fp32 = torch.cat([model(x).reshape(-1) for (x,) in held_out]).detach().numpy()
    print(f"litert blockwise: {sqnr_db(want, got):.1f} dB vs the plan's weights, {sqnr_db(fp32, got):.1f} dB vs fp32")
    assert sqnr_db(want, got) > 30.0 and sqnr_db(want, got) > sqnr_db(fp32, got) + 3.0


def test_litert_refuses_weights_it_cannot_hold(tmp_path) -> None:
    model, unit, _ = setup = _setup(norm=True)
    per_channel = collect_stats(model, [(x,) for x in _tokens(4, 1)], progress=False).plan(4, 8)
    with pytest.raises(ConversionError, match=r"only as per-group \(blockwise\) Linear weights"):
        convert_quantized(unit, "tflite", per_channel, tmp_path)
    with pytest.raises(ConversionError, match="folded other ops .* into the FULLY_CONNECTED weight of 'fc1'"):
        convert_quantized(unit, "tflite", setup[2], tmp_path)
    assert not list(tmp_path.iterdir())
