"""ONNX int8 from a plan: the fp32 export with QDQ written in by hand from the plan's qparams.

QDQ goes on the inputs and weights of the plan's MatMul/Gemm/Conv only (quantizing every op type destroys ViT
accuracy, see STACK.md), with uint8 activations (u8s8 is what onnxruntime's x86 kernels want) and int32
biases. The int32 bias is what makes onnxruntime fuse a Linear into an int8 `QGemm`: without it, its
MatMul+Add fusion turns the QDQ MatMul into a float Gemm before the QDQ fusions run. onnxruntime runs a QDQ
Conv as an integer kernel (QLinearConv) only when its output is quantized too: a planned conv with an output
grid (every conv but a patch embedding, see `quant.layer_ops.quantizes_output`) is written so (`qlinear_conv`),
the others as an integer GEMM over their patches (`conv_gemm`), or, where neither fits (a depthwise conv of an
older plan), as `ConvInteger` rescaled to float (`_conv_integer`).
Attention matmuls in the plan get QDQ on both inputs (QLinearMatMul / MatMulIntegerToFloat). The reference is
the plan's fake-quant model.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from converters.artifact import TargetResult
from converters.errors import ConversionError
from converters.quant_lowering import FAKE_QUANT_REFERENCE, Lowering, no_options, quant_facts, quantize_array
from converters.targets.onnx.conv_gemm import conv_as_gemm, fits, value_shapes
from converters.targets.onnx.lower import convert as lower_fp
from converters.targets.onnx.nbits import check_plan, ensure_domain, matmul_nbits
from converters.targets.onnx.qlinear_conv import qdq_conv
from converters.targets.onnx.runner import optimized_op_counts
from converters.unit import DeployUnit
from quant.fake_quant import apply_plan
from quant.plan import QuantPlan


def lowering(plan: QuantPlan, **options: Any) -> Lowering:
    """The onnx quantized lowering (it takes no options)."""
    no_options("onnx", options)
    check_plan(plan)
    return _lower


_ONNX_GEMMS = ("MatMul", "Gemm", "Conv")
_ORT_INT8_OPS = (
    "QGemm",
    "QLinearMatMul",
    "MatMulIntegerToFloat",
    "QLinearConv",
    "ConvInteger",
    "MatMulInteger",
    "MatMulNBits",
)


def _lower(unit: DeployUnit, plan: QuantPlan, path: Path) -> tuple[TargetResult, nn.Module]:
    import onnx

    result = lower_fp(unit, "fp32", path)
    model = onnx.load(str(path))
    _fold_weight_transposes(model)
    placed = _insert_qdq(model, plan, unit.module)
    ensure_domain(model)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    ops = Counter(node.op_type for node in model.graph.node)
    kernels = optimized_op_counts(path)
    facts = dict(result["facts"], onnx_ops=dict(ops.most_common()), onnx_node_count=sum(ops.values()))
    facts["quant"] = quant_facts(
        plan,
        "onnx",
        "QDQ (plan qparams: uint8 activations, int8 per-channel weights, int32 bias)",
        FAKE_QUANT_REFERENCE,
        quantized_nodes=placed,
        ort_int8_kernels={op: kernels[op] for op in _ORT_INT8_OPS if kernels[op]},
        ort_float_gemms={op: kernels[op] for op in ("MatMul", "Gemm", "Conv", "FusedMatMul") if kernels[op]},
    )
    return TargetResult(inputs=result["inputs"], outputs=result["outputs"], facts=facts), apply_plan(unit.module, plan)


def _fold_weight_transposes(model: Any) -> None:
    """Store Wᵀ for every Transpose of a stored weight. A Linear called more than once (EfficientTAM's pooled
    memory attention runs k_proj/v_proj on the pooled bank, the single frame and the pointers) is exported as one
    Transpose of its weight feeding each call's MatMul; folded, every MatMul reads an initializer the QDQ
    rewrite can check against the module and quantize, as for a Linear called once."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type == "Transpose" and len(node.input) == 1 and node.input[0] in inits:
            perm = next((list(helper.get_attribute_value(a)) for a in node.attribute if a.name == "perm"), None)
            folded = np.ascontiguousarray(np.transpose(numpy_helper.to_array(inits[node.input[0]]), perm))
            graph.initializer.append(numpy_helper.from_array(folded, node.output[0]))
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def _owner(node: Any) -> str | None:
    """The module that emitted an ONNX node, from the dynamo exporter's name-scope metadata."""
    import ast

    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            scopes = ast.literal_eval(prop.value)
            return scopes[-2] if len(scopes) >= 2 else None
    return None


def _insert_qdq(model: Any, plan: QuantPlan, module: nn.Module) -> int:
    """Rewrite `model` in place: QDQ on the planned GEMMs' activation inputs, int8 weights, int32 biases.

    Each weight initializer is checked against the module's own weight (in the layout the op reads it),
    so a mismatch between plan, module and exported graph fails here instead of as a silent accuracy loss.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    new_inits: list[Any] = []
    act_cache: dict[tuple[str, float, int], tuple[str, str, str]] = {}  # key → (dequantized, quantized, zero)
    prelude: dict[int, list[Any]] = {}
    replaced: set[int] = set()  # planned Convs, written as a GEMM or ConvInteger in their prelude
    shapes = value_shapes(model)
    found: Counter[str] = Counter()

    def const(name: str, value: np.ndarray) -> str:
        new_inits.append(numpy_helper.from_array(value, name))
        return name

    for index, node in enumerate(graph.node):
        layer = plan.layers.get(_owner(node) or "")
        if layer is None or node.op_type not in _ONNX_GEMMS:
            continue
        found[layer.name] += 1
        added = prelude.setdefault(index, [])
        gemm = node.op_type == "Conv" and _conv_gemm(node, layer, shapes.get(node.input[0]), inits, module, const)
        if gemm:
            added.extend(gemm)  # patches x int8 weights: onnxruntime's MatMulIntegerToFloat (conv_gemm.py)
            replaced.add(index)
            continue
        act_inputs = (0, 1) if layer.kind == "matmul" else (0,)
        for slot, q in zip(act_inputs, layer.inputs, strict=True):
            key = (node.input[slot], q.scale[0], q.zero_point[0])
            if key not in act_cache:
                # Signed plan grid → uint8 storage: the same levels shifted by 2^(b-1) (quant.observers).
                stem = f"{node.name}_x{slot}"
                scale = const(f"{stem}_scale", np.array(q.scale[0], np.float32))
                zero = const(f"{stem}_zp", np.array(q.zero_point[0] - q.quant_min, np.uint8))
                added.append(helper.make_node("QuantizeLinear", [node.input[slot], scale, zero], [f"{stem}_q"]))
                added.append(helper.make_node("DequantizeLinear", [f"{stem}_q", scale, zero], [f"{stem}_dq"]))
                act_cache[key] = (f"{stem}_dq", f"{stem}_q", zero)
            node.input[slot] = act_cache[key][0]
        if layer.weight is None:
            continue
        axis = _weight_axis(node, layer.name, inits, module)
        if layer.weight.granularity == "per_group":  # group-wise weights: a real 4-bit MatMulNBits (nbits.py)
            stored = numpy_helper.to_array(inits[node.input[1]])
            added.append(matmul_nbits(node, layer, stored, axis, const))
            replaced.add(index)
            continue
        w_scale = np.asarray(layer.weight.scale, np.float32)
        w_int = quantize_array(numpy_helper.to_array(inits[node.input[1]]), layer.weight, axis)
        if node.op_type == "Conv":
            _, x_q, x_zero = act_cache[key]  # a conv's one activation input
            if len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
                raise ConversionError(f"onnx: the bias of {layer.name!r} is computed in the graph, not stored")
            bias = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] else None
            replaced.add(index)
            if layer.output is not None:  # an int8 output grid: QLinearConv (qlinear_conv.py)
                x_scale = layer.inputs[0].scale[0]
                added.extend(qdq_conv(node, act_cache[key][0], w_int, w_scale, x_scale, bias, layer.output, const))
                continue
            scale = np.float64(layer.inputs[0].scale[0]) * w_scale.astype(np.float64)
            added.extend(_conv_integer(node, x_q, x_zero, w_int, scale, bias, const))
            continue
        stem = f"{node.name}_w"
        w_args = [
            const(f"{stem}_q", w_int),
            const(f"{stem}_scale", w_scale),
            const(f"{stem}_zp", np.zeros(w_scale.shape, np.int8)),
        ]
        added.append(helper.make_node("DequantizeLinear", w_args, [f"{stem}_dq"], axis=axis))
        node.input[1] = f"{stem}_dq"
        bias_host, bias_slot = _bias_of(node, inits, consumers)
        if bias_host is not None:
            bias = numpy_helper.to_array(inits[bias_host.input[bias_slot]]).astype(np.float64)
            b_scale = (np.float64(layer.inputs[0].scale[0]) * w_scale.astype(np.float64)).astype(np.float32)
            b_int = np.round(bias / b_scale).astype(np.int32)
            b_args = [
                const(f"{node.name}_b_q", b_int),
                const(f"{node.name}_b_scale", b_scale),
                const(f"{node.name}_b_zp", np.zeros(b_int.shape, np.int32)),
            ]
            added.append(helper.make_node("DequantizeLinear", b_args, [f"{node.name}_b_dq"], axis=0))
            bias_host.input[bias_slot] = f"{node.name}_b_dq"

    missing = [name for name in plan.layers if not found[name]]
    if missing:
        raise ConversionError(
            f"onnx: plan layer {missing[0]!r} has no MatMul/Gemm/Conv in the exported graph (an op the exporter "
            "fused or renamed); quantize it for another target"
        )
    nodes = [n for i, node in enumerate(graph.node) for n in (*prelude.get(i, []), *([] if i in replaced else [node]))]
    # An activation read only by ConvIntegers needs no DequantizeLinear (a graph output still does).
    read = {name for node in nodes for name in node.input} | {value.name for value in graph.output}
    nodes = [n for n in nodes if n.op_type != "DequantizeLinear" or n.output[0] in read]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return sum(found.values())


def _conv_gemm(
    node: Any, layer: Any, x_shape: list[int] | None, inits: dict[str, Any], module: nn.Module, const: Any
) -> list[Any] | None:
    """A planned Conv (groups = 1, int8 per-channel weights) as patches x weights, or None where it does not fit
    (a conv with an output grid: QLinearConv; a depthwise conv, a symbolic shape: `ConvInteger`)."""
    from onnx import numpy_helper

    q = layer.weight
    if q is None or q.granularity == "per_group" or layer.output is not None or node.input[1] not in inits:
        return None
    if not fits(node, x_shape, tuple(inits[node.input[1]].dims)):
        return None
    _weight_axis(node, layer.name, inits, module)
    w_int = quantize_array(numpy_helper.to_array(inits[node.input[1]]), q, 0)
    bias = None
    if len(node.input) > 2 and node.input[2]:
        if node.input[2] not in inits:
            raise ConversionError(f"onnx: the bias of {layer.name!r} is computed in the graph, not stored")
        bias = numpy_helper.to_array(inits[node.input[2]])
    x = layer.inputs[0]
    grid = (x.scale[0], x.zero_point[0] - x.quant_min)  # signed plan grid → uint8 storage, as for every input
    return conv_as_gemm(node, x_shape, w_int, np.asarray(q.scale, np.float32), grid, bias, const)


def _conv_integer(
    node: Any, x_q: str, x_zero: str, w_int: np.ndarray, scale: np.ndarray, bias: np.ndarray | None, const: Any
) -> list[Any]:
    """A planned Conv as ConvInteger (uint8 input x int8 weight → int32) times its per-channel scale, plus its bias.

    onnxruntime fuses a QDQ Conv into an integer kernel (QLinearConv) only when its output is quantized too, and
    the plan has no grid for a conv's output: left as QDQ, the conv ran in float on dequantized weights (measured
    on EfficientTAM: 15 of 16 planned convs). ConvInteger takes one weight zero point, 0 for the plan's symmetric
    weights, so per-channel scales are applied after the integer accumulation.
    """
    from onnx import TensorProto, helper

    stem = node.name
    shape = (1, -1) + (1,) * (w_int.ndim - 2)
    acc, as_float = f"{stem}_int32", f"{stem}_int32_float"
    nodes = [
        helper.make_node(
            "ConvInteger",
            [x_q, const(f"{stem}_w_q", w_int), x_zero, const(f"{stem}_w_zp", np.array(0, np.int8))],
            [acc],
            name=f"{stem}_integer",
        ),
        helper.make_node("Cast", [acc], [as_float], to=TensorProto.FLOAT),
    ]
    nodes[0].attribute.extend(node.attribute)  # pads, strides, dilations, group, kernel_shape
    scaled = node.output[0] if bias is None else f"{stem}_scaled"
    rescale = const(f"{stem}_rescale", np.asarray(scale, np.float32).reshape(shape))
    nodes.append(helper.make_node("Mul", [as_float, rescale], [scaled]))
    if bias is not None:
        b = const(f"{stem}_bias", np.asarray(bias, np.float32).reshape(shape))
        nodes.append(helper.make_node("Add", [scaled, b], [node.output[0]]))
    return nodes


def _weight_axis(node: Any, layer: str, inits: dict[str, Any], module: nn.Module) -> int:
    """Output-channel axis of the node's weight as stored: MatMul reads Wᵀ ([in, out]), Gemm per transB."""
    from onnx import helper, numpy_helper

    if node.input[1] not in inits:
        raise ConversionError(f"onnx: the weight of {layer!r} is computed in the graph, not stored; cannot quantize")
    stored = numpy_helper.to_array(inits[node.input[1]])
    weight = module.get_submodule(layer).weight.detach().numpy()
    trans_b = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "transB"), 0)
    axis = 1 if node.op_type == "MatMul" or (node.op_type == "Gemm" and not trans_b) else 0
    expected = weight.T if axis == 1 else weight
    if stored.shape != expected.shape or not np.allclose(stored, expected, rtol=0, atol=1e-6):
        raise ConversionError(
            f"onnx: the stored weight of {layer!r} is not the module's weight ({node.op_type} layout)"
        )
    return axis


def _bias_of(node: Any, inits: dict[str, Any], consumers: dict[str, list[Any]]) -> tuple[Any, int]:
    """(node, input slot) holding the GEMM's float bias initializer, or (None, -1) when it has none."""
    if node.op_type in ("Gemm", "Conv"):
        return (node, 2) if len(node.input) > 2 and node.input[2] in inits else (None, -1)
    users = consumers.get(node.output[0], [])
    if len(users) == 1 and users[0].op_type == "Add":
        add = users[0]
        slots = [i for i, name in enumerate(add.input) if name in inits and len(inits[name].dims) == 1]
        if len(slots) == 1:
            return add, slots[0]
    return None, -1
