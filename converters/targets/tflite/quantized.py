"""TFLite int8 (and blockwise int4) from a plan.

The plan's weights only, through litert-torch's dynamic-range mode: LiteRT's FULLY_CONNECTED / CONV_2D read int8
weights and quantize their activation inside the kernel (float in, float out). That mode also stores other large
float weights the plan left out (e.g. transposed convs) as int8; the facts' `weight_dtypes_held` shows it. The
reference is the PT2E graph with dynamic activations.

A plan with per-group 4-bit Linear weights goes to LiteRT's blockwise int4 FULLY_CONNECTED instead
(`converters.targets.tflite.blockwise`); 4-bit weights in any other form have no LiteRT kernel and are refused.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from converters.artifact import TargetResult
from converters.errors import ConversionError
from converters.quant_lowering import DYNAMIC_REFERENCE, Lowering, gemm_plan, no_options, quant_facts
from converters.targets.tflite.blockwise import blockwise_layers, lower_blockwise
from converters.targets.tflite.lower import NamedIO, litert_module
from converters.targets.tflite.runner import LiteRTRunner
from converters.unit import DeployUnit
from quant.plan import QuantPlan


def lowering(plan: QuantPlan, **options: Any) -> Lowering:
    """The tflite quantized lowering (it takes no options): blockwise int4 when the plan has per-group weights."""
    no_options("tflite", options)
    grouped = blockwise_layers(gemm_plan(plan))
    narrow = [lq for n, lq in plan.layers.items() if (lq.weight_bits or 8) < 8 and n not in grouped]
    if narrow:
        q = narrow[0].weight
        raise ConversionError(
            f"tflite holds 4-bit weights only as per-group (blockwise) Linear weights; plan layer {narrow[0].name!r} "
            f"is {q.bits}-bit {q.granularity}: re-plan it per group"
        )
    return lower_blockwise if grouped else _lower


def _lower(unit: DeployUnit, plan: QuantPlan, path: Path) -> tuple[TargetResult, nn.Module]:
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig

    from quant.pt2e import quantize_pt2e

    gemms = gemm_plan(plan)
    graph = quantize_pt2e(unit.module, unit.example_inputs, gemms, activations="weights", fold_weights=False)
    graph.eval()  # PT2E's patched eval() returns None, so not chained
    # litert-torch reads only the mode (dynamic range) from this quantizer; the graph is already annotated.
    dynamic = QuantConfig(
        pt2e_quantizer=PT2EQuantizer().set_global(get_symmetric_quantization_config(True, False, True))
    )
    named = NamedIO(graph, unit.input_names, unit.output_names).eval()
    kwargs = dict(zip(unit.input_names, unit.example_inputs, strict=True))
    # litert-torch prints its progress to stdout, which would corrupt a `--json` manifest printed there.
    with contextlib.redirect_stdout(sys.stderr):
        litert_torch.convert(litert_module(named, kwargs), sample_kwargs=kwargs, quant_config=dynamic).export(str(path))

    runner = LiteRTRunner(path, num_threads=1)
    weights = _tflite_weight_dtypes(runner)
    ops = Counter(op["op_name"] for op in runner.op_details())
    facts = {"tflite_ops": dict(ops.most_common()), "tflite_op_count": sum(ops.values())}
    facts["quant"] = quant_facts(
        gemms,
        "tflite",
        "PT2E PlanQuantizer: plan weights (int8 per-channel) → LiteRT dynamic-range kernels",
        DYNAMIC_REFERENCE,
        int8_layers=len(gemms.layers),
        fp32_layers=sorted(set(plan.layers) - set(gemms.layers)),
        weight_dtypes_held={op: dict(c) for op, c in weights.items()},
        activations="quantized to int8 inside each kernel at run time (the plan's static grids are not used)",
    )
    # LiteRT's dynamic-range kernels compute what XNNPACK's qd8 GEMMs do (measured: the same outputs to 138 dB).
    reference = quantize_pt2e(unit.module, unit.example_inputs, gemms, activations="dynamic")
    return TargetResult(inputs=runner.inputs, outputs=runner.outputs, facts=facts), reference


def _tflite_weight_dtypes(runner: LiteRTRunner) -> dict[str, Counter[str]]:
    """For each GEMM op kind in the flatbuffer, how many read an int8 / float32 weight (input 1)."""
    dtypes = {d["index"]: np.dtype(d["dtype"]).name for d in runner.interpreter.get_tensor_details()}
    found: dict[str, Counter[str]] = {}
    for op in runner.op_details():
        if op["op_name"] in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"):
            found.setdefault(op["op_name"], Counter())[dtypes.get(op["inputs"][1], "none")] += 1
    return found
