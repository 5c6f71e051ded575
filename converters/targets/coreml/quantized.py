"""Core ML W8A8 (and int4 weights, 6-bit palettes) from a plan.

W8A8 through PT2E, as the design says: the plan's q/dq graph (`activations="plan"`, the plan's fixed activation
grids on every planned Linear/Conv/MatMul input, weights as integer constants) is converted by coremltools'
torch.export frontend into MIL `quantize`/`dequantize` ops (iOS17+) and constexpr weight ops holding the plan's
integers: int8 (`constexpr_affine_dequantize` on iOS17, or `constexpr_blockwise_shift_scale` on iOS18+, where a
weight whose levels fit 4 bits is stored as int4). 6-bit weights become palettes
(`coremltools.optimize.coreml.palettize_weights`, joint compression on the int8 levels): 6-bit indices into an int8
LUT holding the plan's grid (levels -32..31), scaled per output channel. Core ML before iOS 26 cannot scale after a
shared LUT, so on iOS 18 (the default: the oldest target that holds 4- and 6-bit weights) the LUT is repeated per
output channel and dequantized first; every copy holds the same 64 levels, and the package stores identical
constants once, so it costs one 64-byte row per output channel per distinct layer shape, not per layer (DINOv2-S W6:
21.40 MB on iOS 18, 21.19 MB with `coreml_target="iOS26"`, which keeps one LUT per tensor).
`coremltools.optimize.coreml.linear_quantize_activations` is not used: it calibrates by running the model
(`predict`, macOS only), while the plan already holds every activation grid. Scales are stored in fp16, the compute
precision (relative error <= 2^-11).

Group-wise (per_group) weights are Core ML per-block int4 (`constexpr_blockwise_shift_scale`, iOS18+: int4 data,
one fp16 scale per (output row, block of `group_size` input columns)) holding the plan's own integers: PT2E leaves
those layers' weights float (their inputs keep the plan's grids), the module computes with the dequantized weights,
and after conversion `_PlanBlockwise` replaces each such weight constant with the plan's integers and scales
(coremltools' own per-block quantizer would choose its own scales, and its symmetric int4 range is not the plan's
[-8, 7]). Every plan layer's integers and grids are found in the saved program and
checked against the plan; no runtime here, so parity runs only on macOS. The reference is the PT2E graph with the
plan's activation grids.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from converters.artifact import TargetResult
from converters.errors import ConversionError
from converters.quant_lowering import STATIC_REFERENCE, Lowering, quant_facts, quantize_array
from converters.targets.coreml.lower import feature_specs, io_types, mil_op_summary, save
from converters.targets.coreml.program import gemm_weights, load_program, pymil_ops, stored_bytes
from converters.unit import DeployUnit
from quant.groupwise import fake_quantize_weight, quantize_weight_ints
from quant.plan import QuantPlan

# Core ML deployment targets, oldest first, and the oldest one that holds each weight width: int8 weights and
# quantize/dequantize ops need iOS 17, int4 and 6-bit palettes with a per-channel scale iOS 18.
COREML_TARGETS = ("iOS17", "iOS18", "iOS26")
_MIN_TARGET = {8: "iOS17", 4: "iOS18", 6: "iOS18"}


def lowering(plan: QuantPlan, *, coreml_target: str | None = None) -> Lowering:
    """The coreml quantized lowering for the deployment target `coreml_target` (see `deployment_target`)."""
    return functools.partial(_lower, deployment=deployment_target(plan, coreml_target))


def deployment_target(plan: QuantPlan, requested: str | None = None) -> str:
    """Core ML minimum deployment target for `plan`: `requested`, or the oldest that holds its weights;
    ConversionError if `requested` cannot hold them."""
    bits = {lq.weight_bits for lq in plan.layers.values() if lq.weight is not None} or {8}
    needed = max((_MIN_TARGET[b] for b in bits), key=COREML_TARGETS.index)
    if _grouped(plan):  # per-block scales: constexpr_blockwise_shift_scale, iOS18+
        needed = max(needed, "iOS18", key=COREML_TARGETS.index)
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


def _lower(unit: DeployUnit, plan: QuantPlan, path: Path, deployment: str = "iOS17") -> tuple[TargetResult, nn.Module]:
    import coremltools as ct

    from quant.pt2e import quantize_pt2e

    grouped = _grouped(plan)
    module, pt2e_plan = unit.module, plan
    if grouped:  # PT2E quantizes their inputs only; the weights they compute with are the plan's dequantized ones
        module = copy.deepcopy(unit.module)
        layers = dict(plan.layers)
        for name in grouped:
            linear = module.get_submodule(name)
            linear.weight.data.copy_(fake_quantize_weight(linear.weight.detach(), plan.layers[name].weight))
            layers[name] = dataclasses.replace(layers[name], weight=None)
        pt2e_plan = dataclasses.replace(plan, layers=layers)
    graph = quantize_pt2e(module, unit.example_inputs, pt2e_plan, activations="plan")
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
    if grouped:
        from coremltools.models.utils import _apply_graph_pass

        model = _apply_graph_pass(model, _PlanBlockwise(plan, unit.module, grouped), skip_model_load=True)
    six = [name for name, lq in plan.layers.items() if lq.weight_bits == 6]
    if six:
        model = _palettize_6bit(model, plan_layers(model._mil_program, plan, unit.module), six)
    save(model, path)

    # Every fact below is read back from the saved package.
    spec = ct.utils.load_spec(str(path))
    program = load_program(path)
    layers = plan_layers(program, plan, unit.module)
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
    facts["quant"] = quant_facts(
        plan,
        "coreml",
        "PT2E PlanQuantizer (plan weights and activation grids) → coremltools: MIL quantize/dequantize on "
        "every planned input, constexpr int8/int4 weights, 6-bit weights palettized (palettize_weights, "
        "joint compression: uint6 indices into an int8 LUT), group-wise weights as per-block int4/int8 "
        "(constexpr_blockwise_shift_scale with the plan's integers and scales)",
        STATIC_REFERENCE,
        weight_bits_held={kind: dict(c) for kind, c in sorted(held.items())},
        weight_storage=storage,
        activation_quantization=_activations(program, plan, layers),
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


def plan_layers(program: Any, plan: QuantPlan, module: nn.Module) -> dict[str, Any]:
    """Plan layer → the `HeldWeight` in `program` holding exactly its integers, with its scales checked.

    Found by value (the converter names weights after graph nodes, not modules): a plan layer whose integer
    levels are nowhere in the program, or stored with another scale, is a lowering bug and fails here.
    """
    pool: dict[tuple, list[Any]] = {}
    for w in gemm_weights(program):
        if w.levels is not None:
            pool.setdefault(_levels_key(w.levels), []).append(w)
    found = {}
    for name, layer in plan.layers.items():
        q = layer.weight
        if q is None:
            continue
        weight = module.get_submodule(name).weight.detach()
        axis = q.ch_axis if q.ch_axis is not None else 0
        if q.granularity == "per_group":
            want = quantize_weight_ints(weight, q).numpy().astype(np.int32)
        else:
            want = quantize_array(weight.numpy(), q, axis).astype(np.int32)
        same = [w for w in pool.get(_levels_key(want), []) if np.array_equal(w.levels, want)]
        if not same:
            raise ConversionError(
                f"coreml: the {q.bits}-bit integers of plan layer {name!r} are not in the ML program (a weight the "
                "converter folded, transposed or re-quantized)"
            )
        match = same[0]
        pool[_levels_key(want)].remove(match)
        planned = _planned_scale(q, want.shape, axis)
        if not np.allclose(match.scale, planned, rtol=2.0**-10, atol=2.0**-24):
            raise ConversionError(f"coreml: plan layer {name!r} is stored with scales other than the plan's")
        found[name] = match
    return found


def _planned_scale(q: Any, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """The plan's scales broadcastable to a weight of `shape` (per-group ones repeated over their columns)."""
    if q.granularity == "per_group":
        rows, groups = q.groups(shape)
        per_block = np.asarray(q.scale, np.float32).reshape(rows, groups)
        return np.repeat(per_block, q.group_size, axis=1).reshape(shape)
    view = [1] * len(shape)
    view[axis] = -1
    return np.asarray(q.scale, np.float32).reshape(view)


def _grouped(plan: QuantPlan) -> list[str]:
    """The plan's layers with per-group weights (Linear only)."""
    grouped = plan.grouped_layers()
    for name in grouped:
        if plan.layers[name].kind != "linear":
            raise ConversionError(f"coreml: per-group weights are lowered for Linear layers only, not {name!r}")
    return grouped


def _plan_blockwise_pass() -> type:
    """A MIL graph pass class (built lazily: coremltools is imported only when Core ML lowers)."""
    from coremltools.converters.mil.mil import Builder as mb
    from coremltools.converters.mil.mil import types
    from coremltools.converters.mil.mil.passes.graph_pass import AbstractGraphPass

    class PlanBlockwise(AbstractGraphPass):
        """Replace each per-group layer's float weight constant with the plan's integers and per-block scales."""

        def __init__(self, plan: QuantPlan, module: nn.Module, names: list[str]) -> None:
            super().__init__()
            self.todo = []
            for name in names:
                q = plan.layers[name].weight
                w = module.get_submodule(name).weight.detach()
                ints = quantize_weight_ints(w, q).numpy()
                rows, groups = q.groups(w.shape)
                scale = np.asarray(q.scale, np.float32).reshape(rows, groups)
                self.todo.append((name, q.bits, ints, scale, fake_quantize_weight(w, q).numpy()))

        def apply(self, prog: Any) -> None:
            remaining = list(self.todo)
            for op in list(pymil_ops(prog)):
                if op.op_type not in ("linear",) or op.weight.op is None or op.weight.op.op_type != "const":
                    continue
                const = op.weight.op
                value = np.asarray(op.weight.val, np.float32)
                hit = next(
                    (
                        t
                        for t in remaining
                        if t[2].shape == value.shape and np.allclose(value, t[4], rtol=2.0**-9, atol=1e-6)
                    ),
                    None,
                )
                if hit is None:
                    continue
                remaining.remove(hit)
                _, bits, ints, scale, _ = hit
                dtype = types.nptype_from_builtin(types.int4 if bits == 4 else types.int8)
                with const.enclosing_block:
                    new = mb.constexpr_blockwise_shift_scale(
                        data=ints.astype(dtype),
                        scale=scale.astype(op.weight.val.dtype),
                        before_op=const,
                        name=const.name + "_plan_blockwise",
                    )
                const.enclosing_block.replace_uses_of_var_after_op(
                    anchor_op=const, old_var=const.outputs[0], new_var=new, no_check_var_types=True
                )
                if not const.outputs[0].child_ops:
                    const.enclosing_block.remove_ops([const])
            if remaining:
                raise ConversionError(
                    f"coreml: the weight of plan layer {remaining[0][0]!r} is not a linear's constant in the ML "
                    "program (the converter folded or transposed it)"
                )

    return PlanBlockwise


def _PlanBlockwise(plan: QuantPlan, module: nn.Module, names: list[str]) -> Any:  # noqa: N802 (a class factory)
    return _plan_blockwise_pass()(plan, module, names)


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


def _activations(program: Any, plan: QuantPlan, layers: dict[str, Any]) -> dict[str, Any]:
    """What the saved program does to activations: quantize ops by dtype, and which planned GEMM inputs come
    through a dequantize with the plan's grid (checked for the weighted layers, counted for matmuls)."""
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
