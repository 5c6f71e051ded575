"""A planned int8 Conv written as its patches times an int8 weight matrix, which onnxruntime runs as a fast GEMM.

Why: onnxruntime runs a QDQ Conv as an integer kernel only when its output is quantized too (QLinearConv), and
the plan has no grid for a conv's output; its other integer conv, `ConvInteger`, is a slow reference kernel
(measured on EfficientTAM-S 512, 1 thread: its 3 convs took 388 ms as ConvInteger against 103 ms in float,
while its 48 Linears ran as QGemm in 1015 ms). Written as a MatMul over the conv's patches, with the plan's
uint8 input grid and int8 per-channel weights, a conv (groups = 1) becomes MatMulIntegerToFloat, the kernel of a
Linear without int32 bias. The integer arithmetic is the conv's: padding zeros land on the input's zero point,
and every product and sum is the same; the bias stays float, as fake-quant adds it (an int32 bias on the
accumulator's grid lets onnxruntime use QGemm, but rounds the bias: with 4-bit patch-embed weights on a tiny
ViT the artifact fell from 137 to 40 dB of the fake-quant model). Two patch layouts: kernel == stride without
padding (a ViT's patch embedding) is a reshape and a transpose; any other conv gathers its kh·kw taps with
strided Slices and one Concat.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def value_shapes(model: Any) -> dict[str, list[int]]:
    """Static shapes of the graph's values (0 where a dimension is symbolic), by name."""
    from onnx import shape_inference

    graph = model.graph
    infos = list(graph.value_info) + list(graph.input)
    if not graph.value_info:
        infos = list(shape_inference.infer_shapes(model).graph.value_info) + list(graph.input)
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in infos}


def _attrs(node: Any, rank: int) -> dict[str, Any]:
    from onnx import helper

    got = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {
        "group": got.get("group", 1),
        "auto_pad": got.get("auto_pad", b"NOTSET"),
        "strides": list(got.get("strides", [1] * rank)),
        "pads": list(got.get("pads", [0] * 2 * rank)),
        "dilations": list(got.get("dilations", [1] * rank)),
    }


def fits(node: Any, x_shape: list[int] | None, w_shape: tuple[int, ...]) -> bool:
    """Whether this Conv can be written as a GEMM here: 2-D, groups = 1, explicit pads, static input shape."""
    if len(w_shape) != 4 or not x_shape or len(x_shape) != 4 or 0 in x_shape:
        return False
    a = _attrs(node, 2)
    return a["group"] == 1 and a["auto_pad"] in (b"NOTSET", "NOTSET")


def conv_as_gemm(
    node: Any,
    x_shape: list[int],
    w_int: np.ndarray,
    w_scale: np.ndarray,
    x_grid: tuple[float, int],
    bias: np.ndarray | None,
    const: Callable[[str, np.ndarray], str],
) -> list[Any]:
    """Nodes computing `node` (a Conv that `fits`) as patches → QDQ(x_grid) → MatMul(int8 weights) [+ bias].

    `w_int` is the plan's int8 weight [O, C, kh, kw] with per-output-channel `w_scale`; `x_grid` the input's
    (scale, uint8 zero point). The output keeps the Conv's name and NCHW layout."""
    from onnx import helper

    n, c, h, w = x_shape
    o, _, kh, kw = w_int.shape
    a = _attrs(node, 2)
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = a["strides"], a["dilations"], a["pads"]
    ho, wo = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    k = c * kh * kw
    stem = node.name
    nodes: list[Any] = []

    def add(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def shape(name: str, dims: list[int]) -> str:
        return const(f"{stem}_{name}_shape", np.asarray(dims, np.int64))

    x = node.input[0]
    patchify = [kh, kw] == [sh, sw] and not any(a["pads"]) and [dh, dw] == [1, 1] and (h, w) == (ho * kh, wo * kw)
    if patchify:  # [N, C, Ho, kh, Wo, kw] → [N, Ho, Wo, C, kh, kw]: patch rows in the weight's (C, kh, kw) order
        split = add("Reshape", [x, shape("split", [n, c, ho, kh, wo, kw])], f"{stem}_split")
        moved = add("Transpose", [split], f"{stem}_moved", perm=[0, 2, 4, 1, 3, 5])
        cols = add("Reshape", [moved, shape("cols", [n, ho * wo, k])], f"{stem}_cols")
        matrix = w_int.reshape(o, k).T
    else:  # taps (i, j) in row-major order, each its C channels: the weight's (kh, kw, C) order
        src = x
        if any(a["pads"]):
            src = add(
                "Pad", [x, const(f"{stem}_pads", np.asarray([0, 0, pt, pl, 0, 0, pb, pr], np.int64))], f"{stem}_pad"
            )
        taps = []
        axes, steps = (
            const(f"{stem}_axes", np.asarray([2, 3], np.int64)),
            const(f"{stem}_steps", np.asarray([sh, sw], np.int64)),
        )
        for i in range(kh):
            for j in range(kw):
                if (kh, kw, sh, sw) == (1, 1, 1, 1):
                    taps.append(src)
                    continue
                starts = np.asarray([i * dh, j * dw], np.int64)
                ends = starts + np.asarray([(ho - 1) * sh + 1, (wo - 1) * sw + 1], np.int64)
                args = [src, const(f"{stem}_t{i}_{j}_s", starts), const(f"{stem}_t{i}_{j}_e", ends), axes, steps]
                taps.append(add("Slice", args, f"{stem}_t{i}_{j}"))
        stacked = add("Concat", taps, f"{stem}_taps", axis=1) if len(taps) > 1 else taps[0]
        rows = add("Reshape", [stacked, shape("rows", [n, k, ho * wo])], f"{stem}_rows")
        cols = add("Transpose", [rows], f"{stem}_cols", perm=[0, 2, 1])
        matrix = w_int.transpose(2, 3, 1, 0).reshape(k, o)
    x_scale = const(f"{stem}_x_scale", np.array(x_grid[0], np.float32))
    x_zero = const(f"{stem}_x_zp", np.array(x_grid[1], np.uint8))
    quantized = add("QuantizeLinear", [cols, x_scale, x_zero], f"{stem}_cols_q")
    dequantized = add("DequantizeLinear", [quantized, x_scale, x_zero], f"{stem}_cols_dq")
    w_args = [const(f"{stem}_w_q", np.ascontiguousarray(matrix)), const(f"{stem}_w_scale", w_scale)]
    w_args.append(const(f"{stem}_w_zp", np.zeros(w_scale.shape, np.int8)))
    product = add("MatMul", [dequantized, add("DequantizeLinear", w_args, f"{stem}_w_dq", axis=1)], f"{stem}_mm")
    back = add("Transpose", [product], f"{stem}_back", perm=[0, 2, 1])
    if bias is None:
        add("Reshape", [back, shape("out", [n, o, ho, wo])], node.output[0])
        return nodes
    # The float bias is added after the transpose back, as fake-quant adds it: right after the MatMul,
    # onnxruntime's MatMul + Add fusion would make a float Gemm of it before its QDQ fusions run.
    out = add("Reshape", [back, shape("out", [n, o, ho, wo])], f"{stem}_unbiased")
    add("Add", [out, const(f"{stem}_bias", bias.astype(np.float32).reshape(1, o, 1, 1))], node.output[0])
    return nodes
