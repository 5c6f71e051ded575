"""Core ML: torch.export → coremltools ML program (iOS 17) → .mlpackage, inspected since it can't run here.

Prediction exists only on macOS, so on Linux the verification is: the package saves, its spec parses back,
its I/O names/shapes/dtypes are what the unit says, and the MIL program is summarised by op kind and by the
precision ops compute in — enough to catch an op that fell back to fp32 or a layer that vanished.

Inputs and outputs are fp32 at any compute precision (coremltools would otherwise make them fp16 for
iOS 16+ targets), because an app fills MLMultiArrays from Float buffers. int64 inputs become int32, the
widest integer Core ML has.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from converters.artifact import TargetResult, TensorSpec
from converters.unit import DeployUnit

# iOS 17 is spec version 8; raising the target changes which ops and dtypes are legal.
MIN_SPEC_VERSION = 8


def convert(unit: DeployUnit, precision: str, path: Path) -> TargetResult:
    """Convert and save, then read the saved package back (not the in-memory model) for every fact."""
    import coremltools as ct

    exported = torch.export.export(unit.module, unit.example_inputs, strict=False).run_decompositions({})
    inputs, outputs = io_types(unit)
    model = ct.convert(
        exported,
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS17,
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        inputs=inputs,
        outputs=outputs,
        # Loading compiles the model, which needs macOS; the runner loads it where it can.
        skip_model_load=True,
    )
    save(model, path)

    spec = ct.utils.load_spec(str(path))
    if spec.WhichOneof("Type") != "mlProgram":
        raise ValueError(f"saved package is a {spec.WhichOneof('Type')}, not an mlProgram")
    if spec.specificationVersion < MIN_SPEC_VERSION:
        raise ValueError(f"saved package has spec version {spec.specificationVersion} < {MIN_SPEC_VERSION}")
    ops = mil_op_summary(spec.mlProgram)
    return TargetResult(
        inputs=feature_specs(spec.description.input),
        outputs=feature_specs(spec.description.output),
        facts={"spec_version": spec.specificationVersion, "minimum_deployment_target": "iOS17", **ops},
    )


def save(model: Any, path: Path) -> None:
    """Save an ML program package, without the ExecuTorch debug map coremltools 9 adds to it.

    coremltools writes `executorch_debug_handle_mapping.json` beside every program converted from
    torch.export (a map from ExecuTorch debug handles to MIL ops; here every op under a null handle, as these
    graphs carry no handles). It is not a package item (Manifest.json does not list it) and no app reads it,
    but it is as large as a fifth of a small model.
    """
    model.save(str(path))
    stray = Path(path) / "executorch_debug_handle_mapping.json"
    if stray.exists():
        stray.unlink()


def io_types(unit: DeployUnit) -> tuple[list[Any], list[Any]]:
    """Core ML input/output declarations of a unit, shared by the fp and quantized paths so an app drives
    both packages alike: 0..255 RGB inputs become images, other inputs tensors, outputs fp32 tensors."""
    import coremltools as ct

    inputs = [
        ct.ImageType(name=n, shape=tuple(x.shape), color_layout=ct.colorlayout.RGB, scale=1.0)
        if n in unit.image_inputs
        else ct.TensorType(name=n, shape=tuple(x.shape), dtype=_io_dtype(x))
        for n, x in zip(unit.input_names, unit.example_inputs, strict=True)
    ]
    return inputs, [ct.TensorType(name=n, dtype=np.float32) for n in unit.output_names]


def _io_dtype(x: torch.Tensor) -> type:
    if x.is_floating_point():
        return np.float32
    if x.dtype == torch.bool:
        return np.bool_
    return np.int32


def feature_specs(features: Any) -> tuple[TensorSpec, ...]:
    """TensorSpecs of a Core ML model description's inputs or outputs (multi-array features)."""
    from coremltools.proto import FeatureTypes_pb2

    dtype_names = {
        FeatureTypes_pb2.ArrayFeatureType.FLOAT32: "float32",
        FeatureTypes_pb2.ArrayFeatureType.FLOAT16: "float16",
        FeatureTypes_pb2.ArrayFeatureType.DOUBLE: "float64",
        FeatureTypes_pb2.ArrayFeatureType.INT32: "int32",
    }
    specs = []
    for f in features:
        if f.type.WhichOneof("Type") == "imageType":  # an RGB pixel buffer, one byte per channel
            img = f.type.imageType
            specs.append(TensorSpec(f.name, (1, 3, int(img.height), int(img.width)), "uint8"))
            continue
        arr = f.type.multiArrayType
        specs.append(TensorSpec(f.name, tuple(int(d) for d in arr.shape), dtype_names.get(arr.dataType, "unknown")))
    return tuple(specs)


def mil_op_summary(program: Any) -> dict[str, Any]:
    """Count the MIL program's ops by kind and by the dtype of what they compute (consts excluded).

    `mil_cast_ops` is worth watching at fp16: each cast is a precision boundary, and many of them mean ops
    that Core ML would not run in fp16 were fenced off in fp32.
    """
    from coremltools.proto import MIL_pb2

    kinds: Counter[str] = Counter()
    precisions: Counter[str] = Counter()
    for op in _walk_ops(program):
        if op.type == "const":
            continue
        kinds[op.type] += 1
        if op.outputs and op.outputs[0].type.WhichOneof("type") == "tensorType":
            precisions[MIL_pb2.DataType.Name(op.outputs[0].type.tensorType.dataType).lower()] += 1
    return {
        "mil_op_count": sum(kinds.values()),
        "mil_ops": dict(kinds.most_common()),
        "mil_op_precisions": dict(precisions.most_common()),
        "mil_cast_ops": kinds.get("cast", 0),
    }


def _walk_ops(program: Any) -> Any:
    stack = [f.block_specializations[f.opset] for f in program.functions.values()]
    while stack:
        block = stack.pop()
        for op in block.operations:
            yield op
            stack.extend(op.blocks)
