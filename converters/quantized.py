"""A `QuantPlan` lowered to real integer artifacts: `convert_quantized(unit, target, plan, out_dir) -> Artifact`.

Each target takes the plan in the form its runtime turns into integer kernels:
- onnx: the fp32 export with QDQ written in by hand from the plan's qparams, on the inputs and weights of
  the plan's MatMul/Gemm/Conv only (quantizing every op type destroys ViT accuracy, see STACK.md), with
  uint8 activations (u8s8 is what onnxruntime's x86 kernels want) and int32 biases. The int32 bias is what
  makes onnxruntime fuse a Linear into an int8 `QGemm`: without it, its MatMul+Add fusion turns the QDQ
  MatMul into a float Gemm before the QDQ fusions run. Convs are written as `ConvInteger` rescaled to float:
  onnxruntime runs a QDQ Conv as an integer kernel only when its output is quantized too (see `_conv_integer`).
- executorch: `quant.pt2e.PlanQuantizer` with the plan's weights and dynamic int8 activations → XNNPACK's
  qd8 GEMMs (all Linear/Conv delegated, float outputs). XNNPACK's static int8 GEMM needs quantized outputs,
  which wreck ViTs (see `quant.pt2e`), and it has no int8 batched matmul, so the plan's activation grids
  and its activation-activation matmuls are not used here. 4-bit Linear weights become XNNPACK's 4-bit
  per-channel GEMM (qd8-f32-qc4w: two weights a byte): its partitioner takes a weight as 4-bit only when
  declared int8 over [-8, 7], so they are declared so (`int4_full_range`, on weights snapped onto the plan's
  restricted [-7, 7] grid, so the integers are the plan's). XNNPACK has no 4-bit convolution: a 4-bit Conv2d
  is held as int8 storage of its 4-bit levels, and the facts say so. No 6-bit: XNNPACK's GEMMs take 4- or
  8-bit weights only. The facts' `xnnpack_gemms` are read back from the written delegate graphs.
- tflite: the plan's weights only, through litert-torch's dynamic-range mode: LiteRT's FULLY_CONNECTED /
  CONV_2D read int8 weights and quantize their activation inside the kernel (float in, float out). That
  mode also stores other large float weights the plan left out (e.g. transposed convs) as int8; the
  facts' `weight_dtypes_held` shows it.
- coreml: W8A8 through PT2E, as the design says: the plan's q/dq graph (`activations="plan"`, the plan's
  fixed activation grids on every planned Linear/Conv/MatMul input, weights as integer constants) is
  converted by coremltools' torch.export frontend into MIL `quantize`/`dequantize` ops (iOS17+) and
  constexpr weight ops holding the plan's integers: int8 (`constexpr_affine_dequantize` on iOS17, or
  `constexpr_blockwise_shift_scale` on iOS18+, where a weight whose levels fit 4 bits is stored as int4).
  6-bit weights become palettes (`coremltools.optimize.coreml.palettize_weights`, joint compression on
  the int8 levels): 6-bit indices into an int8 LUT holding the plan's grid (levels -32..31), scaled per
  output channel. Core ML before iOS 26 cannot scale after a shared LUT, so on iOS 18 (the default: the
  oldest target that holds 4- and 6-bit weights) the LUT is repeated per output channel and dequantized
  first; every copy holds the same 64 levels, and the package stores identical constants once, so it costs
  one 64-byte row per output channel per distinct layer shape, not per layer (DINOv2-S W6: 21.40 MB on
  iOS 18, 21.19 MB with `coreml_target="iOS26"`, which keeps one LUT per tensor).
  `coremltools.optimize.coreml.linear_quantize_activations` is not used: it calibrates by running the
  model (`predict`, macOS only), while the plan already holds every activation grid. Scales are stored in
  fp16, the compute precision (relative error <= 2^-11). Every plan layer's integers and grids are found in
  the saved program and checked against the plan; no runtime here, so parity runs only on macOS.

Parity is gated against each artifact's reference, the torch model computing what the target should:
the fake-quant model (`quant.fake_quant.apply_plan`, the thing calibration and mixed precision judged) for
onnx, the PT2E graph with dynamic activations for executorch and tflite, the PT2E graph with the plan's
activation grids (the fake-quant model, written as q/dq ops) for coreml. SQNR against the plan's fake-quant
model and against fp32 is reported beside it: with dynamic activations an artifact is usually *closer* to
fp32 than the plan's static grids are, so the distance to fake-quant is no test of the lowering there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from converters.artifact import Artifact, OutputParity
from converters.base import (
    ConversionError,
    TargetResult,
    _check_unit,
    lowering_error,
    stage_artifact,
    target_module,
)
from converters.parity import max_abs_diff, sqnr_db
from converters.runtime import RuntimeUnavailableError
from converters.unit import DeployUnit
from quant.errors import QuantError
from quant.fake_quant import apply_plan
from quant.plan import QuantPlan, TensorQParams

# Weight and activation bit-widths each target holds natively (None: activations stay float there).
WEIGHT_BITS: dict[str, tuple[int, ...]] = {"onnx": (8,), "executorch": (4, 8), "tflite": (8,), "coreml": (4, 6, 8)}
ACT_BITS: dict[str, tuple[int, ...] | None] = {"onnx": (8,), "executorch": (8,), "tflite": (8,), "coreml": (8,)}

# Core ML deployment targets, oldest first, and the oldest one that holds each weight width: int8 weights and
# quantize/dequantize ops need iOS 17, int4 and 6-bit palettes with a per-channel scale iOS 18.
COREML_TARGETS = ("iOS17", "iOS18", "iOS26")
_COREML_MIN_TARGET = {8: "iOS17", 4: "iOS18", 6: "iOS18"}

# Why 25 dB and not the 60 dB of an fp32 lowering: a quantized network is chaotic in its rounding. Two
# correct int8 implementations of one plan differ wherever a value lands within float error of a rounding
# boundary, and each flip is one activation step that later layers pass on. Measured on the real DINOv2-S
# (W8A8 min/max, 12 calibration photos): the PT2E q/dq graph, identical to fake-quant layer by layer
# (97-142 dB), ends 31 dB from it, while fake-quant is 28.6 dB from fp32; the tiny test ViTs agree at
# 45-140 dB. A lowering bug (a wrong scale, a swapped channel axis, a dropped bias) lands below 15 dB.
MIN_SQNR_VS_REFERENCE_DB = 25.0


def held_bits(target: str) -> str:
    """What `target` can hold, in words, for error messages and the manifest."""
    weights = "/".join(str(b) for b in WEIGHT_BITS[target])
    acts = ACT_BITS[target]
    return f"{weights}-bit weights and " + (
        f"{'/'.join(str(b) for b in acts)}-bit activations" if acts else "fp16 activations (weights only)"
    )


def precision_for(plan: QuantPlan, target: str) -> str:
    """The artifact precision name for `plan` on `target`; ConversionError naming the bits it can hold.

    "int8" for an all-8-bit plan on onnx/executorch/tflite; "w<weight bits>a8" otherwise (every coreml
    artifact, which now holds int8 activations too, and executorch with 4-bit weights), e.g. "w8a8",
    "w4-8a8" (4- and 8-bit weights), "w4-6-8a8".
    """
    if target not in WEIGHT_BITS:
        raise ConversionError(f"unknown target {target!r}; valid targets: {', '.join(WEIGHT_BITS)}")
    for kind, held, bits_of in (
        ("weight", WEIGHT_BITS[target], lambda lq: lq.weight_bits),
        ("activation", ACT_BITS[target], lambda lq: lq.act_bits),
    ):
        if held is None:
            continue
        bad = [lq for lq in plan.layers.values() if bits_of(lq) is not None and bits_of(lq) not in held]
        if bad:
            bits = sorted({bits_of(lq) for lq in bad})
            raise ConversionError(
                f"{target} holds {held_bits(target)}; the plan has {'/'.join(map(str, bits))}-bit {kind}s in "
                f"{len(bad)} layer(s) (e.g. {bad[0].name!r}): re-plan for {target} or choose another target"
            )
    weight_bits = sorted({lq.weight_bits for lq in plan.layers.values() if lq.weight is not None})
    if target == "coreml" or weight_bits not in ([], [8]):
        # W8A8 and the like: weight widths held (e.g. "w4-8a8" for a mixed plan), then activation bits.
        return f"w{'-'.join(map(str, weight_bits)) or '16'}a8"
    return "int8"


def convert_quantized(
    unit: DeployUnit,
    target: str,
    plan: QuantPlan,
    out_dir: Path,
    *,
    parity_inputs: Sequence[tuple[torch.Tensor, ...]] | None = None,
    min_sqnr_db: float = MIN_SQNR_VS_REFERENCE_DB,
    coreml_target: str | None = None,
) -> Artifact:
    """Lower `unit` quantized as `plan` says for `target`, check it against its reference, and return it.

    `unit.module` must be the model the plan was calibrated on (after SQ-b, if it ran). Parity runs on
    `parity_inputs`, tuples shaped like the unit's example inputs (default: the example inputs alone), which
    should be held-out real data. As with `convert`, the file appears in `out_dir` only once it loads and
    passes parity. `coreml_target` sets Core ML's minimum deployment target (one of `COREML_TARGETS`; None:
    the oldest that holds the plan's weights, see `coreml_deployment_target`).
    """
    precision = precision_for(plan, target)
    lowering = _LOWER[target]
    if target == "coreml":
        lowering = functools.partial(_lower_coreml, deployment=coreml_deployment_target(plan, coreml_target))
    _check_unit(unit)
    module = target_module(target)
    reference: dict[str, nn.Module] = {}

    def lower(tmp: Path) -> TargetResult:
        try:
            result, reference["module"] = lowering(unit, plan, tmp)
        except (ConversionError, QuantError) as exc:
            raise ConversionError(str(exc)) from exc
        except OSError as exc:
            raise ConversionError(f"{target}: cannot write {tmp}: {exc.strerror or exc}") from exc
        except Exception as exc:
            raise lowering_error(exc, unit, target) from exc
        return result

    return stage_artifact(
        unit,
        target,
        precision,
        out_dir,
        lower=lower,
        check=lambda tmp, result: _parity(
            module, unit, plan, target, tmp, parity_inputs, result, reference["module"], min_sqnr_db
        ),
        backends=(*module.BACKENDS, "torchao"),
        floor=min_sqnr_db,
    )


def coreml_deployment_target(plan: QuantPlan, requested: str | None = None) -> str:
    """Core ML minimum deployment target for `plan`: `requested`, or the oldest that holds its weights;
    ConversionError if `requested` cannot hold them."""
    bits = {lq.weight_bits for lq in plan.layers.values() if lq.weight is not None} or {8}
    needed = max((_COREML_MIN_TARGET[b] for b in bits), key=COREML_TARGETS.index)
    if requested is None:
        return needed
    if requested not in COREML_TARGETS:
        raise ConversionError(f"unknown Core ML target {requested!r}; valid: {', '.join(COREML_TARGETS)}")
    if COREML_TARGETS.index(requested) < COREML_TARGETS.index(needed):
        raise ConversionError(
            f"Core ML {requested} cannot hold this plan's {'/'.join(map(str, sorted(bits)))}-bit weights: "
            f"int4 and 6-bit palettes need iOS18 or later"
        )
    return requested


def _parity(
    module: Any,
    unit: DeployUnit,
    plan: QuantPlan,
    target: str,
    path: Path,
    inputs: Sequence[tuple[torch.Tensor, ...]] | None,
    result: TargetResult,
    reference: nn.Module,
    floor: float,
) -> tuple[dict[str, OutputParity] | None, str | None]:
    """SQNR of the artifact against its reference (gated), the plan's fake-quant and fp32, over all `inputs`."""
    quant = result["facts"]["quant"]
    try:
        runner = module.load_runner(path, None)
    except RuntimeUnavailableError as exc:
        quant.update(parity_vs_reference=None, parity_vs_fake_quant=None, parity_vs_fp32=None)
        return None, str(exc)
    except Exception as exc:
        raise ConversionError(f"{target} artifact of unit {unit.name!r} does not load: {exc}") from exc

    batches = [tuple(b) for b in inputs] if inputs is not None else [unit.example_inputs]
    got = [runner.run(*(x.detach().numpy() for x in b)) for b in batches]
    models = {"reference": reference, "fake_quant": apply_plan(unit.module, plan), "fp32": unit.module}
    figures: dict[str, dict[str, OutputParity]] = {}
    for kind, model in models.items():
        model.eval()
        outs = [dataclasses.replace(unit, module=model).run_eager(*b) for b in batches]
        figures[kind] = {}
        for i, name in enumerate(unit.output_names):
            r = np.concatenate([o[i].detach().numpy().reshape(-1) for o in outs])
            g = np.concatenate([np.asarray(o[i]).reshape(-1) for o in got])
            figures[kind][name] = OutputParity(sqnr_db(r, g), max_abs_diff(r, g))
        quant[f"parity_vs_{kind}"] = {k: v.to_dict() for k, v in figures[kind].items()}
    for name, fig in figures["reference"].items():
        if not fig.sqnr_db >= floor:
            raise ConversionError(
                f"unit {unit.name!r} on {target}: output {name!r} is {fig.sqnr_db:.1f} dB from its reference "
                f"({quant['reference']}; < {floor:.0f} dB; {figures['fp32'][name].sqnr_db:.1f} dB from fp32)"
            )
    return figures["reference"], None


_FAKE_QUANT = "the plan's fake-quant model"
_DYNAMIC = "the PT2E graph: plan weights, dynamic int8 activations"


def _quant_facts(plan: QuantPlan, target: str, method: str, reference: str, **extra: Any) -> dict[str, Any]:
    summary = plan.summary()
    return {
        "method": method,
        "reference": reference,
        "plan_methods": summary["methods"],
        "weight_bits": summary["weight_bits"],
        "activation_bits": summary["activation_bits"] if ACT_BITS[target] else {"16 (float)": summary["layers"]},
        "target_holds": held_bits(target),
        **extra,
    }


# ---------------------------------------------------------------------------------------------------- onnx

_ONNX_GEMMS = ("MatMul", "Gemm", "Conv")
_ORT_INT8_OPS = ("QGemm", "QLinearMatMul", "MatMulIntegerToFloat", "QLinearConv", "ConvInteger", "MatMulInteger")


def _lower_onnx(unit: DeployUnit, plan: QuantPlan, path: Path) -> tuple[TargetResult, nn.Module]:
    import onnx

    from converters import onnx_target

    result = onnx_target.convert(unit, "fp32", path)
    model = onnx.load(str(path))
    placed = _insert_qdq(model, plan, unit.module)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    ops = Counter(node.op_type for node in model.graph.node)
    kernels = _ort_kernels(path)
    facts = dict(result["facts"], onnx_ops=dict(ops.most_common()), onnx_node_count=sum(ops.values()))
    facts["quant"] = _quant_facts(
        plan,
        "onnx",
        "QDQ (plan qparams: uint8 activations, int8 per-channel weights, int32 bias)",
        _FAKE_QUANT,
        quantized_nodes=placed,
        ort_int8_kernels={op: kernels[op] for op in _ORT_INT8_OPS if kernels[op]},
        ort_float_gemms={op: kernels[op] for op in ("MatMul", "Gemm", "Conv", "FusedMatMul") if kernels[op]},
    )
    return TargetResult(inputs=result["inputs"], outputs=result["outputs"], facts=facts), apply_plan(unit.module, plan)


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
    replaced: set[int] = set()  # planned Convs, written as ConvInteger in their prelude
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
        w_scale = np.asarray(layer.weight.scale, np.float32)
        w_int = _quantize_array(numpy_helper.to_array(inits[node.input[1]]), layer.weight, axis)
        if node.op_type == "Conv":
            _, x_q, x_zero = act_cache[key]  # a conv's one activation input
            if len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
                raise ConversionError(f"onnx: the bias of {layer.name!r} is computed in the graph, not stored")
            bias = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] else None
            scale = np.float64(layer.inputs[0].scale[0]) * w_scale.astype(np.float64)
            added.extend(_conv_integer(node, x_q, x_zero, w_int, scale, bias, const))
            replaced.add(index)
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
    # An activation read only by ConvIntegers needs no DequantizeLinear.
    read = {name for node in nodes for name in node.input}
    nodes = [n for n in nodes if n.op_type != "DequantizeLinear" or n.output[0] in read]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return sum(found.values())


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


def _quantize_array(w: np.ndarray, q: TensorQParams, axis: int) -> np.ndarray:
    """The plan's integers for `w`, computed as fake-quant does (round(w / s) + z, clamped)."""
    shape = [1] * w.ndim
    shape[axis] = -1
    scale = np.asarray(q.scale, np.float32).reshape(shape)
    zero = np.asarray(q.zero_point, np.float32).reshape(shape)
    return np.clip(np.round(w / scale) + zero, q.quant_min, q.quant_max).astype(np.int8)


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


def _ort_kernels(path: Path) -> Counter[str]:
    """Op kinds onnxruntime actually runs after its graph optimisations (its fused int8 kernels show here)."""
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3  # the "hardware-specific optimisations" warning is expected here
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath)
    return Counter(node.op_type for node in optimized.graph.node)


# ----------------------------------------------------------------------------------------- executorch/tflite


def _pt2e_unit(unit: DeployUnit, graph: nn.Module) -> DeployUnit:
    graph.eval()  # PT2E's patched eval() returns None, so not chained
    return dataclasses.replace(unit, module=graph)


def _gemm_plan(plan: QuantPlan, module: nn.Module | None = None) -> QuantPlan:
    """The plan without its activation-activation matmuls, which only static grids quantize.

    With `module`, convs with one input channel per group leave too (depthwise ones, and a conv reading a
    one-channel mask): XNNPACK's dynamically quantized convolution counts them as depthwise and declines them,
    and a quantized op it declines has no portable ExecuTorch kernel to fall back on.
    """

    def keeps(name: str, lq: Any) -> bool:
        if lq.kind == "matmul":
            return False
        if module is None or lq.kind != "conv2d":
            return True
        conv = module.get_submodule(name)
        return conv.in_channels // conv.groups > 1

    return plan.subset([name for name, lq in plan.layers.items() if keeps(name, lq)])


def _lower_executorch(unit: DeployUnit, plan: QuantPlan, path: Path) -> tuple[TargetResult, nn.Module]:
    from executorch.backends.transforms.duplicate_dynamic_quant_chain import DuplicateDynamicQuantChainPass

    from converters import executorch_target
    from quant.pt2e import is_int4_linear, quantize_pt2e

    gemms = _gemm_plan(plan, unit.module)
    graph = quantize_pt2e(unit.module, unit.example_inputs, gemms, activations="dynamic", int4_full_range=True)
    # One activation feeding several GEMMs (EfficientTAM's memory, read by every layer's K and V projections)
    # gets one shared dynamic-quant chain; XNNPACK's partitioner then finds dependency cycles. ExecuTorch's
    # own LLM export gives each consumer its own chain first, as done here.
    DuplicateDynamicQuantChainPass()(graph)
    result = executorch_target.convert(_pt2e_unit(unit, graph), "fp32", path)
    xnn = executorch_target.xnnpack_gemm_dtypes(path)
    int4 = [name for name, lq in gemms.layers.items() if is_int4_linear(lq)]
    held4 = xnn.get("linear", {}).get("weights", {}).get("qcint4", 0)
    if held4 != len(int4):
        raise ConversionError(
            f"executorch: the plan has {len(int4)} 4-bit Linear layer(s) but XNNPACK holds {held4} 4-bit "
            f"(qcint4) GEMM weight(s) in the written program (e.g. {int4[0] if int4 else '-'!r})"
        )
    narrow_convs = sorted(n for n, lq in gemms.layers.items() if lq.kind == "conv2d" and (lq.weight_bits or 8) < 8)
    facts = dict(result["facts"])
    facts["quant"] = _quant_facts(
        gemms,
        "executorch",
        "PT2E PlanQuantizer: plan weights (per-channel int8; 4-bit Linear weights as XNNPACK qc4w), dynamic "
        "int8 activations → XNNPACK qd8 GEMMs",
        _DYNAMIC,
        int8_layers=len(gemms.layers) - len(int4),
        int4_layers=len(int4),
        int4_convs_in_int8_storage=narrow_convs,
        fp32_layers=sorted(set(plan.layers) - set(gemms.layers)),
        xnnpack_gemms=xnn,
        weight_bits_held={
            kind: {_XNN_BITS.get(dtype, dtype): n for dtype, n in counts["weights"].items()}
            for kind, counts in xnn.items()
        },
        activations="dynamic per-tensor int8 (the plan's static activation grids are not used)",
    )
    return TargetResult(inputs=result["inputs"], outputs=result["outputs"], facts=facts), graph


# XNNPACK weight datatypes in the words the other targets' facts use.
_XNN_BITS = {"qcint8": "int8", "qcint4": "int4", "qbint4": "int4-blockwise", "qint8": "int8-per-tensor"}


def _lower_tflite(unit: DeployUnit, plan: QuantPlan, path: Path) -> tuple[TargetResult, nn.Module]:
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig

    from converters.runtime import LiteRTRunner
    from converters.tflite_target import _Named
    from quant.pt2e import quantize_pt2e

    gemms = _gemm_plan(plan)
    graph = quantize_pt2e(unit.module, unit.example_inputs, gemms, activations="weights", fold_weights=False)
    graph.eval()  # PT2E's patched eval() returns None, so not chained
    # litert-torch reads only the mode (dynamic range) from this quantizer; the graph is already annotated.
    dynamic = QuantConfig(
        pt2e_quantizer=PT2EQuantizer().set_global(get_symmetric_quantization_config(True, False, True))
    )
    named = _Named(graph, unit.input_names, unit.output_names).eval()
    # litert-torch prints its progress to stdout, which would corrupt a `--json` manifest printed there.
    with contextlib.redirect_stdout(sys.stderr):
        litert_torch.convert(
            named, sample_kwargs=dict(zip(unit.input_names, unit.example_inputs, strict=True)), quant_config=dynamic
        ).export(str(path))

    runner = LiteRTRunner(path, num_threads=1)
    weights = _tflite_weight_dtypes(runner)
    ops = Counter(op["op_name"] for op in runner._interp._get_ops_details())
    facts = {"tflite_ops": dict(ops.most_common()), "tflite_op_count": sum(ops.values())}
    facts["quant"] = _quant_facts(
        gemms,
        "tflite",
        "PT2E PlanQuantizer: plan weights (int8 per-channel) → LiteRT dynamic-range kernels",
        _DYNAMIC,
        int8_layers=len(gemms.layers),
        fp32_layers=sorted(set(plan.layers) - set(gemms.layers)),
        weight_dtypes_held={op: dict(c) for op, c in weights.items()},
        activations="quantized to int8 inside each kernel at run time (the plan's static grids are not used)",
    )
    # LiteRT's dynamic-range kernels compute what XNNPACK's qd8 GEMMs do (measured: the same outputs to 138 dB).
    reference = quantize_pt2e(unit.module, unit.example_inputs, gemms, activations="dynamic")
    return TargetResult(inputs=runner.inputs, outputs=runner.outputs, facts=facts), reference


def _tflite_weight_dtypes(runner: Any) -> dict[str, Counter[str]]:
    """For each GEMM op kind in the flatbuffer, how many read an int8 / float32 weight (input 1)."""
    interp = runner._interp
    dtypes = {d["index"]: np.dtype(d["dtype"]).name for d in interp.get_tensor_details()}
    found: dict[str, Counter[str]] = {}
    for op in interp._get_ops_details():
        if op["op_name"] in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"):
            found.setdefault(op["op_name"], Counter())[dtypes.get(op["inputs"][1], "none")] += 1
    return found


# ---------------------------------------------------------------------------------------------------- coreml


def _lower_coreml(
    unit: DeployUnit, plan: QuantPlan, path: Path, deployment: str = "iOS17"
) -> tuple[TargetResult, nn.Module]:
    import coremltools as ct

    from converters.coreml_target import (
        feature_specs,
        gemm_weights,
        io_types,
        load_program,
        mil_op_summary,
        save,
        stored_bytes,
    )
    from quant.pt2e import quantize_pt2e

    graph = quantize_pt2e(unit.module, unit.example_inputs, plan, activations="plan")
    graph.eval()  # PT2E's patched eval() returns None, so not chained
    exported = torch.export.export(graph, unit.example_inputs, strict=False).run_decompositions({})
    inputs, outputs = io_types(unit)
    model = ct.convert(
        exported,
        convert_to="mlprogram",
        minimum_deployment_target=getattr(ct.target, deployment),
        compute_precision=ct.precision.FLOAT16,
        inputs=inputs,
        outputs=outputs,
        skip_model_load=True,
    )
    six = [name for name, lq in plan.layers.items() if lq.weight_bits == 6]
    if six:
        model = _palettize_6bit(model, _coreml_layers(model._mil_program, plan, unit.module), six)
    save(model, path)

    # Every fact below is read back from the saved package.
    spec = ct.utils.load_spec(str(path))
    program = load_program(path)
    layers = _coreml_layers(program, plan, unit.module)
    held: dict[str, Counter[str]] = {}
    for w in gemm_weights(program):
        held.setdefault(w.op_type, Counter())[w.storage] += 1
    storage: dict[str, dict[str, float]] = {}
    for kind in sorted({w.storage for w in layers.values()}):
        weights = [w for w in layers.values() if w.storage == kind]
        size, numel = stored_bytes(weights), sum(w.numel for w in weights)
        storage[kind] = {"layers": len(weights), "weights": numel, "bytes": size, "bits_per_weight": 8 * size / numel}
    facts = {
        "spec_version": spec.specificationVersion,
        "minimum_deployment_target": deployment,
        **mil_op_summary(spec.mlProgram),
    }
    facts["quant"] = _quant_facts(
        plan,
        "coreml",
        "PT2E PlanQuantizer (plan weights and activation grids) → coremltools: MIL quantize/dequantize on "
        "every planned input, constexpr int8/int4 weights, 6-bit weights palettized (palettize_weights, "
        "joint compression: uint6 indices into an int8 LUT)",
        _STATIC,
        weight_bits_held={kind: dict(c) for kind, c in sorted(held.items())},
        weight_storage=storage,
        activation_quantization=_coreml_activations(program, plan, layers),
        palette_lut=(
            "one int8 LUT per tensor, then the per-channel scale"
            if deployment == "iOS26"
            else "an int8 LUT per output channel, scaled before the lookup (Core ML before iOS 26); identical "
            "rows, stored once per layer shape"
        ),
        scale_dtype="fp16",
    )
    result = TargetResult(
        inputs=feature_specs(spec.description.input), outputs=feature_specs(spec.description.output), facts=facts
    )
    return result, graph


_STATIC = "the PT2E graph: plan weights and the plan's activation grids (= the fake-quant model), run in fp32"


def _coreml_layers(program: Any, plan: QuantPlan, module: nn.Module) -> dict[str, Any]:
    """Plan layer → the `HeldWeight` in `program` holding exactly its integers, with its scales checked.

    Found by value (the converter names weights after graph nodes, not modules): a plan layer whose integer
    levels are nowhere in the program, or stored with another scale, is a lowering bug and fails here.
    """
    from converters.coreml_target import gemm_weights

    pool: dict[tuple, list[Any]] = {}
    for w in gemm_weights(program):
        if w.levels is not None:
            pool.setdefault(_levels_key(w.levels), []).append(w)
    found = {}
    for name, layer in plan.layers.items():
        q = layer.weight
        if q is None:
            continue
        weight = module.get_submodule(name).weight.detach().numpy()
        axis = q.ch_axis if q.ch_axis is not None else 0
        want = _quantize_array(weight, q, axis).astype(np.int32)
        same = [w for w in pool.get(_levels_key(want), []) if np.array_equal(w.levels, want)]
        if not same:
            raise ConversionError(
                f"coreml: the {q.bits}-bit integers of plan layer {name!r} are not in the ML program (a weight the "
                "converter folded, transposed or re-quantized)"
            )
        match = same[0]
        pool[_levels_key(want)].remove(match)
        shape = [1] * want.ndim
        shape[axis] = -1
        planned = np.asarray(q.scale, np.float32).reshape(shape)
        if not np.allclose(match.scale, planned, rtol=2.0**-10, atol=2.0**-24):
            raise ConversionError(f"coreml: plan layer {name!r} is stored with scales other than the plan's")
        found[name] = match
    return found


def _levels_key(levels: np.ndarray) -> tuple:
    return levels.shape, hashlib.blake2b(np.ascontiguousarray(levels, np.int32).tobytes(), digest_size=16).digest()


def _six_bit_lut(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`palettize_weights` custom LUT for a 6-bit plan grid: all 64 signed levels, indices = level + 32."""
    levels = np.asarray(levels).reshape(-1).astype(np.int64)
    if levels.size and (levels.min() < -32 or levels.max() > 31):
        raise ConversionError(f"coreml: 6-bit levels expected, found {levels.min()}..{levels.max()}")
    return np.arange(-32, 32), (levels + 32).astype(np.uint8)


def _palettize_6bit(model: Any, layers: dict[str, Any], six: list[str]) -> Any:
    """The 6-bit layers' int8 levels turned into 6-bit palettes by coremltools' joint compression."""
    import coremltools.optimize.coreml as cto

    # The config is looked up through the const's constexpr consumer, named after the weight op it feeds.
    configs = {
        layers[name].source: cto.OpPalettizerConfig(
            mode="custom", lut_function=_six_bit_lut, granularity="per_tensor", weight_threshold=0
        )
        for name in six
    }
    return cto.palettize_weights(model, cto.OptimizationConfig(op_name_configs=configs), joint_compression=True)


def _coreml_activations(program: Any, plan: QuantPlan, layers: dict[str, Any]) -> dict[str, Any]:
    """What the saved program does to activations: quantize ops by dtype, and which planned GEMM inputs come
    through a dequantize with the plan's grid (checked for the weighted layers, counted for matmuls)."""
    from converters.coreml_target import pymil_ops

    ops = list(pymil_ops(program))
    by_name = {op.name: op for op in ops}
    dtypes = Counter(str(op.output_dtype.val) for op in ops if op.op_type == "quantize")
    quantized: Counter[str] = Counter()
    for op in ops:
        if op.op_type in ("linear", "conv", "matmul"):
            slots = ("x", "y") if op.op_type == "matmul" else ("x",)
            if all(op.inputs[s].op is not None and op.inputs[s].op.op_type == "dequantize" for s in slots):
                quantized[op.op_type] += 1
    for name, held in layers.items():
        q = plan.layers[name].inputs[0]
        source = by_name[held.op_name].inputs["x"].op
        if source is None or source.op_type != "dequantize":
            raise ConversionError(f"coreml: the input of plan layer {name!r} is not quantized in the ML program")
        scale = float(source.scale.val)
        zero = int(source.zero_point.val) if source.zero_point is not None else 0
        low = 0 if source.input.dtype.is_unsigned() else -128
        if not (abs(scale - q.scale[0]) <= 2.0**-10 * q.scale[0] and zero - low == q.zero_point[0] - q.quant_min):
            raise ConversionError(f"coreml: the input grid of plan layer {name!r} is not the plan's")
    matmuls = sum(lq.kind == "matmul" for lq in plan.layers.values())
    if quantized["matmul"] < matmuls:
        raise ConversionError(
            f"coreml: the plan quantizes {matmuls} matmul(s), the ML program only {quantized['matmul']}"
        )
    return {
        "quantize_ops": sum(dtypes.values()),
        "dequantize_ops": sum(op.op_type == "dequantize" for op in ops),
        "quantize_dtypes": dict(dtypes),
        "quantized_gemm_inputs": dict(quantized),
    }


_LOWER = {"onnx": _lower_onnx, "executorch": _lower_executorch, "tflite": _lower_tflite, "coreml": _lower_coreml}
