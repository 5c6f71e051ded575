"""What a saved .mlpackage holds, read back from its spec and weight blobs (no macOS needed).

For compressed packages, `load_program` reads the saved package back into a MIL program and `gemm_weights`
decodes what each linear/conv weight really is there: float, linear int8/int4 (`constexpr_affine_dequantize`,
`constexpr_blockwise_shift_scale`) or a palette (`constexpr_lut_to_dense`, indices into an int8 LUT that a
per-channel scale dequantizes, in either op order), with its integer levels, scales and stored bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


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
