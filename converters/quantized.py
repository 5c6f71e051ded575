"""A `QuantPlan` lowered to real integer artifacts: `convert_quantized(unit, target, plan, out_dir) -> Artifact`.

Each target takes the plan in the form its runtime turns into integer kernels:
- onnx: the fp32 export with QDQ written in by hand from the plan's qparams, on the inputs and weights of
  the plan's MatMul/Gemm/Conv only (quantizing every op type destroys ViT accuracy, see STACK.md), with
  uint8 activations (u8s8 is what onnxruntime's x86 kernels want) and int32 biases. The int32 bias is what
  makes onnxruntime fuse a Linear into an int8 `QGemm`: without it, its MatMul+Add fusion turns the QDQ
  MatMul into a float Gemm before the QDQ fusions run.
- executorch: `quant.pt2e.PlanQuantizer` with the plan's weights and dynamic int8 activations → XNNPACK's
  qd8 GEMMs (all Linear/Conv delegated, float outputs). XNNPACK's static int8 GEMM needs quantized outputs,
  which wreck ViTs (see `quant.pt2e`), and it has no int8 batched matmul, so the plan's activation grids
  and its activation-activation matmuls are not used here.
- tflite: the plan's weights only, through litert-torch's dynamic-range mode: LiteRT's FULLY_CONNECTED /
  CONV_2D read int8 weights and quantize their activation inside the kernel (float in, float out). That
  mode also stores other large float weights the plan left out (e.g. transposed convs) as int8; the
  facts' `weight_dtypes_held` shows it.
- coreml: weight compression of the converted ML program (`linear_quantize_weights`, per-channel
  symmetric, int8 or int4 per layer) from weights first snapped to the plan's grid, so the stored integers
  are the plan's. Core ML keeps activations in fp16 here.

Parity is gated against each artifact's reference, the torch model computing what the target should:
the fake-quant model (`quant.fake_quant.apply_plan`, the thing calibration and mixed precision judged) for
onnx, the PT2E graph with dynamic activations for executorch and tflite. SQNR against the plan's fake-quant
model and against fp32 is reported beside it: with dynamic activations an artifact is usually *closer* to
fp32 than the plan's static grids are, so the distance to fake-quant is no test of the lowering there.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
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
WEIGHT_BITS: dict[str, tuple[int, ...]] = {"onnx": (8,), "executorch": (8,), "tflite": (8,), "coreml": (4, 8)}
ACT_BITS: dict[str, tuple[int, ...] | None] = {"onnx": (8,), "executorch": (8,), "tflite": (8,), "coreml": None}

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
    """The artifact precision name for `plan` on `target`; ConversionError naming the bits it can hold."""
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
    weight_bits = {lq.weight_bits for lq in plan.layers.values() if lq.weight is not None}
    return "int4-weights" if target == "coreml" and 4 in weight_bits else "int8"


def convert_quantized(
    unit: DeployUnit,
    target: str,
    plan: QuantPlan,
    out_dir: Path,
    *,
    parity_inputs: Sequence[tuple[torch.Tensor, ...]] | None = None,
    min_sqnr_db: float = MIN_SQNR_VS_REFERENCE_DB,
) -> Artifact:
    """Lower `unit` quantized as `plan` says for `target`, check it against its reference, and return it.

    `unit.module` must be the model the plan was calibrated on (after SQ-b, if it ran). Parity runs on
    `parity_inputs`, tuples shaped like the unit's example inputs (default: the example inputs alone), which
    should be held-out real data. As with `convert`, the file appears in `out_dir` only once it loads and
    passes parity.
    """
    precision = precision_for(plan, target)
    _check_unit(unit)
    module = target_module(target)
    reference: dict[str, nn.Module] = {}

    def lower(tmp: Path) -> TargetResult:
        try:
            result, reference["module"] = _LOWER[target](unit, plan, tmp)
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
    act_cache: dict[tuple[str, float, int], str] = {}
    prelude: dict[int, list[Any]] = {}
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
                act_cache[key] = f"{stem}_dq"
            node.input[slot] = act_cache[key]
        if layer.weight is None:
            continue
        axis = _weight_axis(node, layer.name, inits, module)
        w_scale = np.asarray(layer.weight.scale, np.float32)
        w_int = _quantize_array(numpy_helper.to_array(inits[node.input[1]]), layer.weight, axis)
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
    nodes = [n for i, node in enumerate(graph.node) for n in (*prelude.get(i, []), node)]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return sum(found.values())


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


def _gemm_plan(plan: QuantPlan) -> QuantPlan:
    """The plan without its activation-activation matmuls, which only static grids quantize."""
    return plan.subset([name for name, lq in plan.layers.items() if lq.kind != "matmul"])


def _lower_executorch(unit: DeployUnit, plan: QuantPlan, path: Path) -> tuple[TargetResult, nn.Module]:
    from converters import executorch_target
    from quant.pt2e import quantize_pt2e

    gemms = _gemm_plan(plan)
    graph = quantize_pt2e(unit.module, unit.example_inputs, gemms, activations="dynamic")
    result = executorch_target.convert(_pt2e_unit(unit, graph), "fp32", path)
    facts = dict(result["facts"])
    facts["quant"] = _quant_facts(
        gemms,
        "executorch",
        "PT2E PlanQuantizer: plan weights (int8 per-channel), dynamic int8 activations → XNNPACK qd8",
        _DYNAMIC,
        int8_layers=len(gemms.layers),
        fp32_layers=sorted(set(plan.layers) - set(gemms.layers)),
        activations="dynamic per-tensor int8 (the plan's static activation grids are not used)",
    )
    return TargetResult(inputs=result["inputs"], outputs=result["outputs"], facts=facts), graph


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


def _lower_coreml(unit: DeployUnit, plan: QuantPlan, path: Path) -> tuple[TargetResult, nn.Module]:
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    from converters.coreml_target import feature_specs, io_types, mil_op_summary
    from quant.fake_quant import FakeQuantize

    snapped = copy.deepcopy(unit.module).eval()
    with torch.no_grad():
        for name, layer in plan.layers.items():
            if layer.weight is not None:
                weight = snapped.get_submodule(name).weight
                weight.copy_(FakeQuantize(layer.weight)(weight))
    int4 = any(lq.weight_bits == 4 for lq in plan.layers.values())
    deployment = ct.target.iOS18 if int4 else ct.target.iOS17
    exported = torch.export.export(snapped, unit.example_inputs, strict=False).run_decompositions({})
    inputs, outputs = io_types(unit)
    model = ct.convert(
        exported,
        convert_to="mlprogram",
        minimum_deployment_target=deployment,
        compute_precision=ct.precision.FLOAT16,
        inputs=inputs,
        outputs=outputs,
        skip_model_load=True,
    )
    consts = _coreml_weight_consts(model._mil_program, plan)
    configs = {
        const: cto.OpLinearQuantizerConfig(
            mode="linear_symmetric",
            dtype=f"int{plan.layers[layer].weight_bits}",
            granularity="per_channel",
            weight_threshold=0,
        )
        for layer, const in consts.items()
    }
    model = cto.linear_quantize_weights(model, cto.OptimizationConfig(op_name_configs=configs))
    model.save(str(path))

    spec = ct.utils.load_spec(str(path))
    held = _coreml_weight_bits(model._mil_program)  # the program just saved (a loaded package has none)
    facts = {
        "spec_version": spec.specificationVersion,
        "minimum_deployment_target": "iOS18" if int4 else "iOS17",
        **mil_op_summary(spec.mlProgram),
    }
    facts["quant"] = _quant_facts(
        plan,
        "coreml",
        "linear_quantize_weights (per-channel symmetric) on weights snapped to the plan's grid",
        f"{_FAKE_QUANT} (with fp16 activations)",
        weight_bits_held=held,
    )
    result = TargetResult(
        inputs=feature_specs(spec.description.input), outputs=feature_specs(spec.description.output), facts=facts
    )
    return result, apply_plan(unit.module, plan)


def _coreml_gemms(program: Any) -> list[Any]:
    return [op for op in program.functions["main"].operations if op.op_type in ("linear", "conv", "matmul")]


def _coreml_weight_consts(program: Any, plan: QuantPlan) -> dict[str, str]:
    """Plan layer → name of the MIL const holding its weight (named `p_<module_path>_weight[_to_fp16]`)."""
    by_param = {}
    for op in _coreml_gemms(program):
        weight = op.inputs.get("weight") if op.op_type != "matmul" else None
        if weight is not None and weight.op is not None and weight.op.op_type == "const":
            by_param[weight.op.name.removeprefix("p_").removesuffix("_to_fp16")] = weight.op.name
    found, missing = {}, []
    for name, layer in plan.layers.items():
        if layer.weight is None:
            continue
        const = by_param.get(name.replace(".", "_") + "_weight")
        if const is None:
            missing.append(name)
        else:
            found[name] = const
    if missing:
        raise ConversionError(
            f"coreml: no weight const for plan layer {missing[0]!r} in the ML program (the converter renamed "
            "or folded it)"
        )
    return found


def _coreml_weight_bits(program: Any) -> dict[str, dict[str, int]]:
    """For each GEMM kind, how many ops read an int8 / int4 / float weight in the saved program."""
    from coremltools.converters.mil.mil.types import builtin_to_string

    held: dict[str, Counter[str]] = {}
    for op in _coreml_gemms(program):
        weight = op.inputs.get("weight") if op.op_type != "matmul" else op.inputs.get("y")
        if weight is None or weight.op is None:
            continue
        source = weight.op
        if source.op_type.startswith("constexpr"):
            data = source.inputs.get("data", source.inputs.get("quantized_data"))
            bits = builtin_to_string(data.dtype) if data is not None else "unknown"
        elif source.op_type == "const":
            bits = builtin_to_string(weight.dtype)
        else:
            continue  # an activation operand, not a weight
        held.setdefault(op.op_type, Counter())[bits] += 1
    return {kind: dict(c) for kind, c in held.items()}


_LOWER = {"onnx": _lower_onnx, "executorch": _lower_executorch, "tflite": _lower_tflite, "coreml": _lower_coreml}
