"""Core ML: torch.export → coremltools ML program (iOS 17) → .mlpackage, inspected since it can't run here.

Prediction exists only on macOS, so on Linux the verification is: the package saves, its spec parses back,
its I/O names/shapes/dtypes are what the unit says, and the MIL program is summarised by op kind and by the
precision ops compute in — enough to catch an op that fell back to fp32 or a layer that vanished.

Inputs and outputs are fp32 at any compute precision (coremltools would otherwise make them fp16 for
iOS 16+ targets), because an app fills MLMultiArrays from Float buffers. int64 inputs become int32, the
widest integer Core ML has.

For compressed packages, `load_program` reads the saved package back into a MIL program and `gemm_weights`
decodes what each linear/conv weight really is there: float, linear int8/int4 (`constexpr_affine_dequantize`,
`constexpr_blockwise_shift_scale`) or a palette (`constexpr_lut_to_dense`, indices into an int8 LUT that a
per-channel scale dequantizes, in either op order), with its integer levels, scales and stored bytes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from converters.artifact import TensorSpec
from converters.base import TargetResult
from converters.runtime import CoreMLRunner
from converters.unit import DeployUnit

SUFFIX = ".mlpackage"
PRECISIONS = ("fp16", "fp32")
BACKENDS = ("coremltools",)
FALLBACK = "executorch"

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


def load_runner(path: Path, num_threads: int | None = None) -> CoreMLRunner:
    """Core ML model for `path`; raises RuntimeUnavailableError off macOS."""
    return CoreMLRunner(path, num_threads)


def load_program(path: Path) -> Any:
    """The MIL program of a saved .mlpackage, read back from its spec and weight blobs (no macOS needed)."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    model = ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    return load(spec, specification_version=spec.specificationVersion, file_weights_dir=model.weights_dir)


@dataclass
class HeldWeight:
    """One linear/conv weight as the ML program stores it.

    `storage` is "fp16"/"fp32" (a plain const), "int8"/"int4"/"uint8"/... (linear quantization) or
    "palettized<n>" (n-bit indices into an int8 LUT). For integer storage, `levels` are the signed integer
    levels (offset removed) shaped like the weight and `scale` is broadcastable to them, so the weight the
    program computes with is `scale * levels`; both are None for float storage or a float LUT.
    `constants` are the (content key, bytes) of every constant the weight is rebuilt from (data or indices,
    LUT, scales, offsets): the package stores identical constants once (e.g. one LUT for all layers of a
    shape), so `stored_bytes` counts each key once. `op_name` is the linear/conv op, `source` the
    (constexpr) op producing its weight.
    """

    op_type: str
    op_name: str
    source: str
    storage: str
    shape: tuple[int, ...]
    levels: np.ndarray | None
    scale: np.ndarray | None
    constants: tuple[tuple[bytes, int], ...]

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))


def stored_bytes(weights: list[HeldWeight]) -> int:
    """Bytes `weights` take in the package, each distinct constant counted once."""
    return sum(dict(c for w in weights for c in w.constants).values())


def gemm_weights(program: Any) -> list[HeldWeight]:
    """Every linear/conv op's weight in `program` (ops whose weight is computed at run time are skipped)."""
    found = []
    for op in pymil_ops(program):
        if op.op_type not in ("linear", "conv", "conv_transpose"):
            continue
        weight = op.inputs.get("weight")
        if weight is None or weight.op is None:
            continue
        decoded = _decode_weight(weight)
        if decoded is not None:
            found.append(HeldWeight(op.op_type, op.name, weight.op.name, *decoded))
    return found


def pymil_ops(program: Any) -> Any:
    """Every op of a pymil program, nested blocks included."""
    stack = list(program.functions.values())
    while stack:
        block = stack.pop()
        for op in block.operations:
            yield op
            stack.extend(op.blocks)


def _const(var: Any) -> tuple[bytes, int]:
    """(content key, stored bytes) of a constant input."""
    import hashlib

    value = np.ascontiguousarray(var.val)
    key = hashlib.blake2b(f"{_dtype(var)}{value.shape}".encode() + value.tobytes(), digest_size=16).digest()
    return key, int(np.ceil(value.size * var.dtype.get_bitwidth() / 8))


def _dtype(var: Any) -> str:
    from coremltools.converters.mil.mil.types import builtin_to_string

    return builtin_to_string(var.dtype)


_Decoded = tuple[str, tuple[int, ...], np.ndarray | None, np.ndarray | None, tuple[tuple[bytes, int], ...]]


def _decode_weight(var: Any) -> _Decoded | None:
    """(storage, shape, levels, scale, constants) of the weight `var`, or None if it is not a constant."""
    op = var.op
    shape = tuple(int(d) for d in var.shape)
    if op.op_type == "const":
        return _dtype(var), shape, None, None, (_const(var),)
    if op.op_type == "constexpr_affine_dequantize":  # iOS16/17: int8/uint8, per-tensor or along one axis
        data, zero, scale, axis = op.quantized_data, op.zero_point, op.scale, int(op.axis.val)
        bcast = [1] * len(shape)
        bcast[axis] = -1
        levels = data.val.astype(np.int32) - np.asarray(zero.val, np.int32).reshape(bcast)
        constants = tuple(_const(v) for v in (data, zero, scale))
        return _dtype(data), shape, levels, np.asarray(scale.val, np.float32).reshape(bcast), constants
    if op.op_type == "constexpr_blockwise_shift_scale":  # iOS18: data (a const, or a palette) * scale
        source = op.data.op
        if source.op_type == "const":
            levels, storage, constants = op.data.val.astype(np.int32), _dtype(op.data), (_const(op.data),)
        elif source.op_type == "constexpr_lut_to_dense" and source.lut.op.op_type == "const":
            lut = source.lut  # an int8 LUT looked up, then scaled per channel (the iOS 26 order)
            if not np.issubdtype(lut.val.dtype, np.integer):
                return None
            levels = _lut_levels(source.indices.val, lut.val.astype(np.int32))
            storage = f"palettized{source.indices.dtype.get_bitwidth()}"
            constants = (_const(source.indices), _const(lut))
        else:
            return None
        scale = _blockwise(np.asarray(op.scale.val, np.float32), shape)
        if op.offset is not None:
            levels = levels - _blockwise(np.asarray(op.offset.val), shape).astype(np.int32)
            constants += (_const(op.offset),)
        return storage, shape, levels, scale, (*constants, _const(op.scale))
    if op.op_type == "constexpr_lut_to_dense":
        indices, lut = op.indices, op.lut
        storage = f"palettized{indices.dtype.get_bitwidth()}"
        lut_op = lut.op
        if lut_op.op_type == "constexpr_blockwise_shift_scale" and lut_op.data.op.op_type == "const":
            # An int8 LUT dequantized before the lookup (the order Core ML before iOS 26 requires): its scale
            # must not vary along the palette, so it is a scale per LUT, i.e. per weight block.
            lut_int, lut_scale = lut_op.data.val.astype(np.int32), np.asarray(lut_op.scale.val, np.float32)
            if lut_op.offset is not None or lut_scale.shape[-2:] != (1, 1):
                return None
            levels = _lut_levels(indices.val, lut_int)
            scale = _blockwise(lut_scale[..., 0, 0], shape)
            return storage, shape, levels, scale, (_const(indices), _const(lut_op.data), _const(lut_op.scale))
        if lut_op.op_type == "const":  # a float palette: no integer levels
            return f"{storage}-{_dtype(lut)}", shape, None, None, (_const(indices), _const(lut))
    return None


def _blockwise(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Per-block `values` (same rank as the weight) repeated up to the weight's shape where blocks are > 1."""
    values = values.reshape(values.shape if values.ndim == len(shape) else (-1,) + (1,) * (len(shape) - 1))
    for axis, (n, m) in enumerate(zip(shape, values.shape, strict=True)):
        if m not in (1, n):
            values = np.repeat(values, n // m, axis=axis)
    return values


def _lut_levels(indices: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Look `indices` up in `lut` (shape [*blocks, palette, 1]: one palette per block of the weight)."""
    if lut.shape[-1] != 1:
        raise ValueError("vector palettes are not decoded")
    indices = np.asarray(indices).astype(np.int64)
    blocks = lut.shape[:-2]
    group = np.zeros(indices.shape, np.int64)
    for axis, (n, m) in enumerate(zip(indices.shape, blocks, strict=True)):
        coord = (np.arange(n) // (n // m)).reshape([-1 if a == axis else 1 for a in range(indices.ndim)])
        group = group * m + coord
    return lut.reshape(-1, lut.shape[-2])[group, indices]
