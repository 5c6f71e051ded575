"""ExecuTorch int8/int4 from a plan.

`quant.pt2e.PlanQuantizer` with the plan's weights and dynamic int8 activations → XNNPACK's qd8 GEMMs (all
Linear/Conv delegated, float outputs). XNNPACK's static int8 GEMM needs quantized outputs, which wreck ViTs (see
`quant.pt2e`), and it has no int8 batched matmul, so the plan's activation grids and its activation-activation
matmuls are not used here. 4-bit Linear weights become XNNPACK's 4-bit per-channel GEMM (qd8-f32-qc4w: two weights a
byte): its partitioner takes a weight as 4-bit only when declared int8 over [-8, 7], so they are declared so
(`int4_full_range`, on weights snapped onto the plan's restricted [-7, 7] grid, so the integers are the plan's).
XNNPACK has no 4-bit convolution: a 4-bit Conv2d is held as int8 storage of its 4-bit levels, and the facts say so.
No 6-bit: XNNPACK's GEMMs take 4- or 8-bit weights only. The facts' `xnnpack_gemms` are read back from the written
delegate graphs. The reference is the PT2E graph with dynamic activations, a Linear's input quantized per row as
XNNPACK does (`converters.quant_lowering.per_row_dynamic`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from converters.artifact import TargetResult
from converters.errors import ConversionError
from converters.quant_lowering import (
    DYNAMIC_REFERENCE,
    Lowering,
    gemm_plan,
    no_options,
    per_row_dynamic,
    quant_facts,
    with_module,
)
from converters.targets.executorch.blockwise import blockwise_layers, lower_blockwise
from converters.targets.executorch.facts import xnnpack_gemm_dtypes
from converters.targets.executorch.lower import convert as lower_fp
from converters.unit import DeployUnit
from quant.plan import QuantPlan


def lowering(plan: QuantPlan, **options: Any) -> Lowering:
    """The executorch quantized lowering (it takes no options)."""
    no_options("executorch", options)
    return lower_blockwise if blockwise_layers(plan) else _lower  # per-group 4-bit Linears: qb4w


def _lower(unit: DeployUnit, plan: QuantPlan, path: Path) -> tuple[TargetResult, nn.Module]:
    from executorch.backends.transforms.duplicate_dynamic_quant_chain import DuplicateDynamicQuantChainPass
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
        XnnpackDynamicallyQuantizedPartitioner,
        XnnpackPartitioner,
    )

    from quant.pt2e import is_int4_linear, quantize_pt2e

    gemms = gemm_plan(plan, unit.module)
    graph = quantize_pt2e(unit.module, unit.example_inputs, gemms, activations="dynamic", int4_full_range=True)
    # One activation feeding several GEMMs (EfficientTAM's memory, read by every layer's K and V projections)
    # gets one shared dynamic-quant chain; XNNPACK's partitioner then finds dependency cycles. ExecuTorch's
    # own LLM export gives each consumer its own chain first, as done here.
    DuplicateDynamicQuantChainPass()(graph)
    try:
        result = lower_fp(with_module(unit, graph), "fp32", path, decompose_norms=False)
        _execute_once(path, unit)
    except Exception as exc:
        if not (_channels_last_failure(exc) or isinstance(exc, _RuntimeRejection)):
            raise
        # In one large partition, XNNPACK's channels-last pass (ExecuTorch 1.5) walks a conv's dynamic-quant
        # input back by first arguments to the partition's first node and makes that channels_last, whatever
        # lies between. Past a LayerNorm it is a rank-3 token tensor (MobileViT's fold back to a map before its
        # 1x1 conv) and lowering fails on `aten._to_copy`; past a zero pad (EfficientNet-Lite0's "same"-padded
        # stem) the pad keeps its NCHW paddings on the NHWC tensor and the written program fails when run
        # (XNNPACK "Propagating input shapes failed: xnn_status_invalid_parameter"). Then each dynamically
        # quantized GEMM gets its own delegate first, whose input is the walk's end, the float rest after, as
        # ExecuTorch's LLM export does. Only then: every model that lowered in one partitioner keeps the
        # partitioning (and the speed) it was measured with.
        partitioners = [XnnpackDynamicallyQuantizedPartitioner(), XnnpackPartitioner()]
        result = lower_fp(with_module(unit, graph), "fp32", path, decompose_norms=False, partitioners=partitioners)
    xnn = xnnpack_gemm_dtypes(path)
    int4 = [name for name, lq in gemms.layers.items() if is_int4_linear(lq)]
    held4 = xnn.get("linear", {}).get("weights", {}).get("qcint4", 0)
    if held4 != len(int4):
        raise ConversionError(
            f"executorch: the plan has {len(int4)} 4-bit Linear layer(s) but XNNPACK holds {held4} 4-bit "
            f"(qcint4) GEMM weight(s) in the written program (e.g. {int4[0] if int4 else '-'!r})"
        )
    narrow_convs = sorted(n for n, lq in gemms.layers.items() if lq.kind == "conv2d" and (lq.weight_bits or 8) < 8)
    facts = dict(result["facts"])
    facts["quant"] = quant_facts(
        gemms,
        "executorch",
        "PT2E PlanQuantizer: plan weights (per-channel int8; 4-bit Linear weights as XNNPACK qc4w), dynamic "
        "int8 activations → XNNPACK qd8 GEMMs",
        DYNAMIC_REFERENCE,
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
    return TargetResult(inputs=result["inputs"], outputs=result["outputs"], facts=facts), per_row_dynamic(graph)


class _RuntimeRejection(RuntimeError):
    """The written program loaded but the ExecuTorch runtime refused to execute it."""


def _execute_once(path: Path, unit: DeployUnit) -> None:
    """Run the written program once on the unit's example inputs: XNNPACK checks its delegate graphs' shapes
    only when first executed, so a program it will refuse is caught here, not at the parity gate."""
    from converters.targets.executorch.runner import ExecuTorchRunner

    try:
        ExecuTorchRunner(path, num_threads=1).run(*(x.detach().cpu().numpy() for x in unit.example_inputs))
    except Exception as exc:
        raise _RuntimeRejection(str(exc)) from exc


def _channels_last_failure(exc: BaseException | None) -> bool:
    """Whether XNNPACK's channels-last pass failed somewhere in the exception's chain."""
    while exc is not None:
        if "channels_last" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# XNNPACK weight datatypes in the words the other targets' facts use.
_XNN_BITS = {"qcint8": "int8", "qcint4": "int4", "qbint4": "int4-blockwise", "qint8": "int8-per-tensor"}
