from __future__ import annotations

import platform

import pytest

from converters import convert
from converters.coreml_target import feature_specs, mil_op_summary

from .checks import assert_artifact

ON_MAC = platform.system() == "Darwin"


@pytest.fixture(scope="module")
def arts(tmp_path_factory, vit_unit, cross_unit):
    out = tmp_path_factory.mktemp("coreml")
    return {
        "vit16": convert(vit_unit, "coreml", None, out),  # the default precision is fp16
        "vit32": convert(vit_unit, "coreml", "fp32", out),
        "cross": convert(cross_unit, "coreml", "fp16", out),
    }


def test_fp16_package_loads_and_lists_ops(arts, vit_unit):
    import coremltools as ct

    art = arts["vit16"]
    assert_artifact(art, vit_unit, "coreml", "fp16", "coremltools")
    assert art.path.is_dir() and art.path.suffix == ".mlpackage"
    spec = ct.utils.load_spec(str(art.path))
    assert spec.WhichOneof("Type") == "mlProgram" and spec.specificationVersion >= 8
    assert mil_op_summary(spec.mlProgram) == {k: art.facts[k] for k in mil_op_summary(spec.mlProgram)}
    ops = art.facts["mil_ops"]
    assert {"conv", "linear", "layer_norm", "softmax", "gelu"} <= set(ops)
    assert ops["layer_norm"] == 5 and ops["conv"] == 1
    precisions = art.facts["mil_op_precisions"]
    assert precisions["float16"] > 0.8 * art.facts["mil_op_count"]


def test_fp32_computes_in_fp32(arts, vit_unit):
    art = arts["vit32"]
    assert_artifact(art, vit_unit, "coreml", "fp32", "coremltools")
    assert set(art.facts["mil_op_precisions"]) == {"float32"} and art.facts["mil_cast_ops"] == 0


def test_names_and_order_in_spec(arts, cross_unit):
    import coremltools as ct

    art = arts["cross"]
    assert_artifact(art, cross_unit, "coreml", "fp16", "coremltools")
    desc = ct.utils.load_spec(str(art.path)).description
    assert [t.name for t in feature_specs(desc.input)] == ["query", "memory"]
    assert [t.name for t in feature_specs(desc.output)] == ["scores", "attended"]


@pytest.mark.skipif(ON_MAC, reason="on macOS parity is measured instead")
def test_parity_is_a_note_off_macos(arts):
    for art in arts.values():
        assert art.parity is None and art.min_sqnr_db is None
        assert "needs macOS" in art.parity_note


def test_image_inputs_become_core_ml_images(tmp_path):
    """An app feeds a camera frame: the unit's 0..255 RGB input is declared as an image, not a tensor."""
    import coremltools as ct
    import torch

    from converters.unit import DeployUnit

    class Scale(torch.nn.Module):
        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.avg_pool2d(image / 255.0, 4)

    unit = DeployUnit(
        "pool", Scale().eval(), (torch.rand(1, 3, 32, 32) * 255,), ("image",), ("pooled",), image_inputs=("image",)
    )
    art = convert(unit, "coreml", "fp32", tmp_path)
    spec = ct.utils.load_spec(str(art.path))
    (inp,) = spec.description.input
    assert inp.type.WhichOneof("Type") == "imageType"
    assert inp.type.imageType.colorSpace == ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB
    assert art.inputs[0].shape == (1, 3, 32, 32) and art.inputs[0].dtype == "uint8"
    assert art.outputs[0].name == "pooled"
