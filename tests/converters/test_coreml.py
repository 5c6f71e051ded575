"""Core ML: conversion, I/O declarations, compute precision and weights, read back from the saved packages.

Core ML prediction needs macOS: on Linux no package is run, so parity is not tested here (it is a note in the
artifact, checked below); everything a package holds is read back from disk and compared with the torch unit.
"""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch

from converters import Artifact, DeployUnit, convert
from converters.targets.coreml.lower import feature_specs, mil_op_summary
from converters.targets.coreml.program import gemm_weights, load_program, pymil_ops

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


# EfficientTAM's four deploy units through Core ML. Prediction needs macOS, so nothing here runs a package:
# each is read back from disk (spec and MIL program with its weight file) and checked against the torch unit.
TAM_SIZE = 128  # official hyper-parameters at a small input: the four units convert in 25-50 s here
TAM_UNITS = ("image_encoder", "memory_attention", "prompt_mask_decoder", "memory_encoder")
GEMMS = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)


@pytest.fixture(scope="module")
def tam(tmp_path_factory) -> dict[str, tuple[DeployUnit, Artifact]]:
    """EfficientTAM-Ti's units converted at fp16 (the default), with random weights (seeded)."""
    from edgevit.models import create  # the converters never import edgevit; this test feeds them its model

    torch.manual_seed(0)
    model = create("efficienttam", variant="ti", image_size=TAM_SIZE)
    out = tmp_path_factory.mktemp("coreml_tam")
    return {u.name: (u, convert(u, "coreml", "fp16", out)) for u in model.deploy_units()}


def _gemm_params(unit: DeployUnit) -> dict[str, torch.Tensor]:
    """Every Linear/Conv weight and bias of the unit, by the name torch.export gives its placeholder."""
    found = {}
    for name, module in unit.module.named_modules():
        if isinstance(module, GEMMS):
            for kind in ("weight", "bias"):
                if getattr(module, kind) is not None:
                    found["p_" + f"{name}.{kind}".replace(".", "_")] = getattr(module, kind).detach()
    return found


def test_efficienttam_units_are_all_converted(tam) -> None:
    assert tuple(tam) == TAM_UNITS


@pytest.mark.parametrize("name", TAM_UNITS)
def test_efficienttam_unit_io_equals_the_unit(tam, name: str) -> None:
    """Names, order and shapes of the saved package's inputs and outputs are the torch unit's; the image
    encoder's input is a Core ML image (an app hands over a camera pixel buffer), every other tensor is fp32."""
    import coremltools as ct
    from coremltools.proto import FeatureTypes_pb2

    unit, art = tam[name]
    spec = ct.utils.load_spec(str(art.path))
    assert spec.WhichOneof("Type") == "mlProgram" and spec.specificationVersion >= 8
    inputs, outputs = spec.description.input, spec.description.output
    assert [f.name for f in inputs] == list(unit.input_names)
    for feature, x in zip(inputs, unit.example_inputs, strict=True):
        if feature.name in unit.image_inputs:
            image = feature.type.imageType
            assert feature.type.WhichOneof("Type") == "imageType"
            assert image.colorSpace == FeatureTypes_pb2.ImageFeatureType.RGB
            assert (1, 3, image.height, image.width) == tuple(x.shape) == (1, 3, TAM_SIZE, TAM_SIZE)
        else:
            assert feature.type.WhichOneof("Type") == "multiArrayType", feature.name
            assert tuple(feature.type.multiArrayType.shape) == tuple(x.shape), feature.name
            assert feature.type.multiArrayType.dataType == FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    assert (name == "image_encoder") == bool(unit.image_inputs)
    eager = unit.run_eager(*unit.example_inputs)
    assert [f.name for f in outputs] == list(unit.output_names)
    for feature, y in zip(outputs, eager, strict=True):
        assert tuple(feature.type.multiArrayType.shape) == tuple(y.shape), feature.name
        assert feature.type.multiArrayType.dataType == FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    assert [(t.name, t.shape) for t in art.outputs] == [
        (f.name, tuple(y.shape)) for f, y in zip(outputs, eager, strict=True)
    ]


@pytest.mark.parametrize("name", TAM_UNITS)
def test_efficienttam_unit_computes_in_fp16(tam, name: str) -> None:
    unit, art = tam[name]
    precisions = art.facts["mil_op_precisions"]
    assert precisions.get("float16", 0) >= 0.9 * art.facts["mil_op_count"], precisions
    # in fp32: only the casts that turn each fp16 result into its fp32 output
    assert precisions.get("float32", 0) <= len(unit.output_names), precisions


@pytest.mark.parametrize("name", TAM_UNITS)
def test_efficienttam_unit_weights_are_the_torch_weights(tam, name: str) -> None:
    """Every Linear/Conv of the unit is a linear/conv op of the saved program whose weight constant, read back
    from the package's weight file, is the torch weight rounded to fp16; no other parameter feeds a GEMM."""
    unit, art = tam[name]
    program = load_program(art.path)
    params = _gemm_params(unit)
    assert params and all(float(p.std()) > 0 for k, p in params.items() if k.endswith("_weight"))
    held = {w.source: w for w in gemm_weights(program)}
    weights = {k + "_to_fp16" for k in params if k.endswith("_weight")}
    assert {s for s in held if s.startswith("p_")} == weights
    assert all(held[k].storage == "fp16" for k in weights)
    consts = {op.name: op.outputs[0].val for op in pymil_ops(program) if op.op_type == "const"}
    for key, tensor in params.items():
        value = consts[key + "_to_fp16"]
        assert value.dtype == np.float16 and value.shape == tuple(tensor.shape), key
        np.testing.assert_array_equal(value, tensor.half().numpy(), err_msg=key)


def test_efficienttam_fp32_unit_keeps_fp32_weights(tam, tmp_path) -> None:
    """Asked for fp32, the same unit computes in fp32 and holds its weights unrounded."""
    unit, _ = tam["memory_encoder"]
    art = convert(unit, "coreml", "fp32", tmp_path)
    assert set(art.facts["mil_op_precisions"]) <= {"float32", "bool"}, art.facts["mil_op_precisions"]
    consts = {op.name: op.outputs[0].val for op in pymil_ops(load_program(art.path)) if op.op_type == "const"}
    for key, tensor in _gemm_params(unit).items():
        np.testing.assert_array_equal(consts[key], tensor.numpy(), err_msg=key)
