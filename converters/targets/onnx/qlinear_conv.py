"""A planned Conv with an output grid written as QDQ on its input, weight, bias and output: onnxruntime's QLinearConv.

Why: onnxruntime fuses DequantizeLinear → Conv → QuantizeLinear into its integer conv (QLinearConv, u8s8 with
per-channel weights, which its NHWC transformer keeps channels-last from one conv to the next, depthwise ones on
MLAS's depthwise kernels) only when the conv's output is quantized too. A plan gives a conv an output grid where
that pays (`LayerQuant.output`, see `quant.layer_ops.quantizes_output`: every conv but a patch embedding), and
the fake-quant model rounds the output onto the same grid, so the artifact stays the plan's arithmetic. The bias
is int32 on the accumulator's grid (input scale × weight scale), which the fusion requires; fake-quant holds it
so too. The output is dequantized right after, so every consumer reads float as before; onnxruntime drops a
DequantizeLinear → QuantizeLinear pair with the same grid, so consecutive QLinearConvs pass int8 along.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from quant.plan import TensorQParams


def uint8_grid(q: TensorQParams) -> tuple[float, int]:
    """(scale, uint8 zero point) of a signed per-tensor plan grid: the same levels shifted by 2^(b-1)."""
    return q.scale[0], q.zero_point[0] - q.quant_min


def qdq_conv(
    node: Any,
    x_dq: str,
    w_int: np.ndarray,
    w_scale: np.ndarray,
    x_scale: float,
    bias: np.ndarray | None,
    output: TensorQParams,
    const: Callable[[str, np.ndarray], str],
) -> list[Any]:
    """Nodes computing `node` (a Conv) from the dequantized input `x_dq`: int8 per-channel weights, int32 bias,
    output quantized onto `output` and dequantized into the Conv's own output name."""
    from onnx import helper

    stem = node.name
    o = w_int.shape[0]
    w_args = [const(f"{stem}_w_q", w_int), const(f"{stem}_w_scale", w_scale.astype(np.float32))]
    w_args.append(const(f"{stem}_w_zp", np.zeros(o, np.int8)))
    nodes = [helper.make_node("DequantizeLinear", w_args, [f"{stem}_w_dq"], axis=0)]
    inputs = [x_dq, f"{stem}_w_dq"]
    if bias is not None:
        b_scale = (np.float64(x_scale) * w_scale.astype(np.float64)).astype(np.float32)
        b_int = np.round(bias.astype(np.float64) / b_scale).astype(np.int32)
        b_args = [const(f"{stem}_b_q", b_int), const(f"{stem}_b_scale", b_scale)]
        b_args.append(const(f"{stem}_b_zp", np.zeros(o, np.int32)))
        nodes.append(helper.make_node("DequantizeLinear", b_args, [f"{stem}_b_dq"], axis=0))
        inputs.append(f"{stem}_b_dq")
    conv = helper.make_node("Conv", inputs, [f"{stem}_y"], name=stem)
    conv.attribute.extend(node.attribute)  # pads, strides, dilations, group, kernel_shape
    scale, zero = uint8_grid(output)
    y_args = [const(f"{stem}_y_scale", np.array(scale, np.float32)), const(f"{stem}_y_zp", np.array(zero, np.uint8))]
    nodes.append(conv)
    nodes.append(helper.make_node("QuantizeLinear", [f"{stem}_y", *y_args], [f"{stem}_y_q"]))
    nodes.append(helper.make_node("DequantizeLinear", [f"{stem}_y_q", *y_args], [node.output[0]]))
    return nodes
