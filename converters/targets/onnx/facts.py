"""What a written .onnx file really holds, read back from its graph.

`written_weight_bytes` counts the bytes of every planned GEMM weight stored as integers: its integer tensor
(packed nibbles included) and the scales and zero points it is dequantized with — the initializers feeding
DequantizeLinear, ConvInteger/MatMulInteger and the rescale after them, MatMulNBits. Biases are not counted (as
in `quant.cost`, which predicts this figure before anything is written).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_INT_TYPES = {3, 2, 22, 21}  # onnx TensorProto INT8, UINT8, INT4, UINT4


def written_weight_bytes(path: Path, quant: dict[str, Any]) -> int:
    """Bytes of the planned weights (integers, scales, zero points) in the .onnx file at `path`; `quant` (the
    lowering's record) is not needed here: the graph says it all."""
    import onnx
    from onnx import TensorProto
    from onnx.helper import tensor_dtype_to_np_dtype

    graph = onnx.load(str(path)).graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def is_weight(name: str) -> bool:
        t = inits.get(name)
        return t is not None and t.data_type in _INT_TYPES and len(t.dims) >= 2

    counted: set[str] = set()
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and is_weight(node.input[0]):
            counted.update(node.input[:3])
        elif node.op_type == "MatMulNBits":
            counted.update(node.input[1:4])  # packed B, scales, zero points (optional)
        elif node.op_type in ("ConvInteger", "MatMulInteger") and is_weight(node.input[1]):
            counted.update(node.input[1:4:2])  # the weight and its zero point
            counted.update(_rescale(node, consumers, inits))
    total = 0
    for name in counted & set(inits):
        t = inits[name]
        nibbles = t.data_type in (TensorProto.INT4, TensorProto.UINT4)
        bits = 4 if nibbles else 8 * tensor_dtype_to_np_dtype(t.data_type).itemsize  # dtype only, no decoding
        total += int(np.ceil(int(np.prod(t.dims, dtype=np.int64)) * bits / 8))
    return total


def _rescale(node: Any, consumers: dict[str, list[Any]], inits: dict[str, Any]) -> list[str]:
    """The per-channel scale an integer GEMM's int32 output is multiplied by (through its Cast)."""
    found = []
    for cast in consumers.get(node.output[0], []):
        if cast.op_type != "Cast":
            continue
        for mul in consumers.get(cast.output[0], []):
            if mul.op_type == "Mul":
                found += [name for name in mul.input if name in inits]
    return found
