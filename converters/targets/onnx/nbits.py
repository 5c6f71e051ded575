"""A plan's per-group weights as onnxruntime's `MatMulNBits` (com.microsoft): real 4-bit blocks in the file.

QDQ cannot say "one scale per 32 input columns" for a MatMul weight in a form onnxruntime turns into a 4-bit
kernel; `MatMulNBits` is that kernel: Y = A · dequant(B)ᵀ, B stored as unsigned codes packed two per byte (low
nibble first) along K in blocks of `block_size`, shape (N, K / block_size, block_size · bits / 8), one float scale
per (output row, block), dequantized as (code − zero_point) · scale. The plan's symmetric group grid
[−2^(b−1), 2^(b−1) − 1] is stored as code = q + 2^(b−1) with the operator's default zero point 2^(b−1), so the
zero_points input is omitted. `scales` is the plan's own list (row-major over (out, groups), the operator's layout).

A stays float: the planned layer's input QuantizeLinear/DequantizeLinear pair (the plan's 8-bit activation grid)
still feeds it, so the artifact computes exactly what the fake-quant model does. `accuracy_level` 4 would let
onnxruntime quantize A to int8 per block inside the kernel (faster, but no longer the plan's activation grid).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from converters.errors import ConversionError
from quant.groupwise import quantize_weight_ints
from quant.plan import LayerQuant, QuantPlan

NBITS_DOMAIN = "com.microsoft"
HELD_BITS = (2, 4, 8)


def pack_codes(ints: np.ndarray, bits: int, block_size: int) -> np.ndarray:
    """Signed integers (N, K) on the symmetric grid → MatMulNBits' B: uint8 (N, K / block_size, blob), low first."""
    n, k = ints.shape
    if bits not in HELD_BITS:
        raise ConversionError(f"onnx: MatMulNBits holds {'/'.join(map(str, HELD_BITS))}-bit weights, not {bits}")
    if k % block_size:
        raise ConversionError(f"onnx: K = {k} does not split into blocks of {block_size}")
    codes = (ints.astype(np.int16) + 2 ** (bits - 1)).astype(np.uint8)
    per_byte = 8 // bits
    codes = codes.reshape(n, k // per_byte, per_byte)
    packed = np.zeros((n, k // per_byte), np.uint8)
    for j in range(per_byte):
        packed |= (codes[:, :, j] << (bits * j)).astype(np.uint8)
    return packed.reshape(n, k // block_size, block_size * bits // 8)


def unpack_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    """MatMulNBits' B back to the signed integers (N, K): the inverse of `pack_codes` (for reading a file back)."""
    n = packed.shape[0]
    flat = packed.reshape(n, -1)
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    codes = np.stack([(flat >> (bits * j)) & mask for j in range(per_byte)], axis=-1).reshape(n, -1)
    return codes.astype(np.int16) - 2 ** (bits - 1)


def check_plan(plan: QuantPlan) -> None:
    """Refuse, before any export, a per-group layer MatMulNBits cannot hold (block size or grid)."""
    for name in plan.grouped_layers():
        _check_block(plan.layers[name])


def _check_block(layer: LayerQuant) -> int:
    q = layer.weight
    assert q is not None and q.group_size is not None
    size = q.group_size
    if size < 16 or size & (size - 1):
        raise ConversionError(
            f"onnx: MatMulNBits needs a power-of-two block of at least 16 columns; {layer.name!r} has groups of {size}"
        )
    if q.quant_min != -(2 ** (q.bits - 1)) or q.quant_max != 2 ** (q.bits - 1) - 1 or any(q.zero_point):
        raise ConversionError(
            f"onnx: {layer.name!r} is not on a symmetric full-range group grid; MatMulNBits needs one"
        )
    return size


def matmul_nbits(
    node: Any,
    layer: LayerQuant,
    stored: np.ndarray,
    axis: int,
    const: Callable[[str, np.ndarray], str],
    accuracy_level: int = 0,
) -> Any:
    """The MatMulNBits node replacing `node` (a MatMul reading Wᵀ, or a Gemm with transB) for a per-group layer.

    `stored` is the weight initializer as the node reads it (checked against the module by the caller); `axis`
    its output-channel axis (1 for MatMul's [K, N], 0 for a transB Gemm's [N, K]).
    """
    from onnx import helper

    q = layer.weight
    assert q is not None
    size = _check_block(layer)
    w = stored.T if axis == 1 else stored  # (N, K) = (out, in), the module's layout
    if node.op_type == "Gemm":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
            raise ConversionError(f"onnx: the Gemm of {layer.name!r} scales or transposes its inputs; cannot fold it")
    elif node.op_type != "MatMul":
        raise ConversionError(f"onnx: {layer.name!r} is a {node.op_type}; per-group weights need a MatMul or Gemm")
    ints = quantize_weight_ints(torch.from_numpy(np.array(w, np.float32)), q).numpy()
    n, k = ints.shape
    stem = f"{node.name}_nbits"
    inputs = [
        node.input[0],
        const(f"{stem}_B", pack_codes(ints, q.bits, size)),
        const(f"{stem}_scales", np.asarray(q.scale, np.float32)),
    ]
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
        inputs += ["", "", node.input[2]]  # zero_points (default), g_idx (unused), bias
    attrs = {"K": k, "N": n, "bits": q.bits, "block_size": size}
    if accuracy_level:
        attrs["accuracy_level"] = accuracy_level
    return helper.make_node("MatMulNBits", inputs, [node.output[0]], name=stem, domain=NBITS_DOMAIN, **attrs)


def ensure_domain(model: Any) -> None:
    """Declare the com.microsoft opset once a MatMulNBits is in the graph (onnxruntime refuses it otherwise)."""
    from onnx import helper

    uses = any(node.domain == NBITS_DOMAIN for node in model.graph.node)
    if uses and not any(op.domain == NBITS_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(NBITS_DOMAIN, 1))


def nbits_blocks(model: Any) -> list[dict[str, Any]]:
    """Every MatMulNBits in a loaded ONNX model with its bits, block size and (N, K): what the file really holds."""
    from onnx import helper

    found = []
    for node in model.graph.node:
        if node.op_type == "MatMulNBits" and node.domain == NBITS_DOMAIN:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            found.append(
                {
                    "name": node.name,
                    "bits": attrs["bits"],
                    "block_size": attrs["block_size"],
                    "N": attrs["N"],
                    "K": attrs["K"],
                    "B": node.input[1],
                    "scales": node.input[2],
                }
            )
    return found
