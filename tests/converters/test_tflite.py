from __future__ import annotations

import pytest

from converters import convert

from .checks import assert_artifact, assert_parity, assert_runner_order


@pytest.fixture(scope="module")
def arts(tmp_path_factory, vit_unit, cross_unit, fresh_inputs):
    out = tmp_path_factory.mktemp("tflite")
    return {
        "vit32": convert(vit_unit, "tflite", "fp32", out, parity_inputs=fresh_inputs["tiny_vit"]),
        "vit16": convert(vit_unit, "tflite", "fp16", out, parity_inputs=fresh_inputs["tiny_vit"]),
        "cross": convert(cross_unit, "tflite", "fp32", out, parity_inputs=fresh_inputs["cross"]),
    }


def test_fp32_matches_eager(arts, vit_unit):
    art = arts["vit32"]
    assert_artifact(art, vit_unit, "tflite", "fp32", "ai-edge-litert")
    assert_parity(art, vit_unit, min_db=100, max_diff=1e-5)
    assert "FULLY_CONNECTED" in art.facts["tflite_ops"] or "BATCH_MATMUL" in art.facts["tflite_ops"]


def test_fp16_weights_halve_the_file(arts, vit_unit):
    art = arts["vit16"]
    assert_artifact(art, vit_unit, "tflite", "fp16", "ai-edge-litert")
    assert_parity(art, vit_unit, min_db=40, max_diff=0.05)
    assert "DEQUANTIZE" in art.facts["tflite_ops"]
    assert art.size_bytes < arts["vit32"].size_bytes * 0.7


def test_two_in_two_out_order_despite_alphabetical_signature(arts, cross_unit, fresh_inputs):
    assert_artifact(arts["cross"], cross_unit, "tflite", "fp32", "ai-edge-litert")
    assert_parity(arts["cross"], cross_unit, min_db=100, max_diff=1e-5)
    assert_runner_order(arts["cross"], cross_unit, fresh_inputs["cross"])
