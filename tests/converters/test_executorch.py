from __future__ import annotations

import pytest
import torch
from torch import nn

from converters import DeployUnit, convert

from .checks import assert_artifact, assert_parity, assert_runner_order


@pytest.fixture(scope="module")
def arts(tmp_path_factory, vit_unit, cross_unit, fresh_inputs):
    out = tmp_path_factory.mktemp("executorch")
    return {
        "vit32": convert(vit_unit, "executorch", "fp32", out, parity_inputs=fresh_inputs["tiny_vit"]),
        "vit16": convert(vit_unit, "executorch", "fp16", out, parity_inputs=fresh_inputs["tiny_vit"]),
        "cross": convert(cross_unit, "executorch", "fp32", out, parity_inputs=fresh_inputs["cross"]),
    }


def test_fp32_matches_eager_and_reports_delegation(arts, vit_unit):
    art = arts["vit32"]
    assert_artifact(art, vit_unit, "executorch", "fp32", "executorch")
    assert_parity(art, vit_unit, min_db=100, max_diff=1e-5)
    facts = art.facts
    assert facts["delegated_subgraphs"] >= 1 and facts["delegated_nodes"] > 0
    assert facts["undelegated_nodes"] == sum(facts["undelegated_ops"].values())
    assert "getitem" not in facts["undelegated_ops"]
    # Unmasked SDPA is lowered with plain softmax: none of the safe-softmax guard ops remain.
    assert not {"aten_any_dim", "aten_where_self", "aten_logical_not_default"} & set(facts["undelegated_ops"])


def test_fp16_keeps_fp32_io_and_half_precision_parity(arts, vit_unit):
    art = arts["vit16"]
    assert_artifact(art, vit_unit, "executorch", "fp16", "executorch")
    assert_parity(art, vit_unit, min_db=30, max_diff=0.1)
    assert art.min_sqnr_db == 30.0
    assert art.parity["tokens"].sqnr_db < 100  # really computed in half precision
    assert art.size_bytes < arts["vit32"].size_bytes * 0.8


def test_two_in_two_out_order(arts, cross_unit, fresh_inputs):
    assert_artifact(arts["cross"], cross_unit, "executorch", "fp32", "executorch")
    assert_runner_order(arts["cross"], cross_unit, fresh_inputs["cross"])


def test_fp16_keeps_wide_layer_norm_in_fp32(tmp_path):
    # ExecuTorch 1.5.1's fp16 layer_norm is wrong for rows of 256+ elements (about 0 dB); fp32 norms fix it.
    torch.manual_seed(0)
    unit = DeployUnit("ln", nn.LayerNorm(384).eval(), (torch.randn(1, 196, 384),), ("x",), ("y",))
    art = convert(unit, "executorch", "fp16", tmp_path)
    assert art.parity["y"].sqnr_db > 60


class _MaskedAttend(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mask", torch.rand(6, 6) > 0.3)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=self.mask)


def test_masked_attention_keeps_the_safe_softmax(tmp_path):
    torch.manual_seed(0)
    unit = DeployUnit("masked", _MaskedAttend().eval(), (torch.randn(1, 2, 6, 8),), ("q",), ("y",))
    art = convert(unit, "executorch", "fp32", tmp_path)
    assert art.parity["y"].sqnr_db > 100
    assert "aten_where_self" in art.facts["undelegated_ops"]
