"""What every target's quantized lowering shares: its signature, the facts it records, the plan's integers.

A target's `quantized` module (see `converters.targets.registry`) offers `lowering(plan, **options)`, which
checks the options before anything is written and returns a `Lowering`: it writes the plan's integer artifact
and returns what it wrote together with its reference, the torch model computing what the artifact should
(against which `converters.quantized.convert_quantized` gates parity).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from converters.artifact import TargetResult
from converters.errors import ConversionError
from converters.targets.registry import held_bits
from converters.unit import DeployUnit
from quant.plan import QuantPlan, TensorQParams

Lowering = Callable[[DeployUnit, QuantPlan, Path], tuple[TargetResult, nn.Module]]

# The references a target's artifact is held to, in the words of the manifest's `quant.reference`.
FAKE_QUANT_REFERENCE = "the plan's fake-quant model"
DYNAMIC_REFERENCE = "the PT2E graph: plan weights, dynamic int8 activations"
STATIC_REFERENCE = "the PT2E graph: plan weights and the plan's activation grids (= the fake-quant model), run in fp32"


def no_options(target: str, options: dict[str, Any]) -> None:
    """Refuse lowering options given to a target that takes none."""
    if options:
        raise ConversionError(f"{target} takes no quantized lowering options; got {', '.join(sorted(options))}")


def quant_facts(plan: QuantPlan, target: str, method: str, reference: str, **extra: Any) -> dict[str, Any]:
    """The manifest's `quant` record of an artifact: how it was lowered, against what, what the plan holds."""
    summary = plan.summary()
    return {
        "method": method,
        "reference": reference,
        "plan_methods": summary["methods"],
        "weight_bits": summary["weight_bits"],
        "activation_bits": summary["activation_bits"],
        "target_holds": held_bits(target),
        **extra,
    }


def quantize_array(w: np.ndarray, q: TensorQParams, axis: int) -> np.ndarray:
    """The plan's integers for `w`, computed as fake-quant does (round(w / s) + z, clamped)."""
    shape = [1] * w.ndim
    shape[axis] = -1
    scale = np.asarray(q.scale, np.float32).reshape(shape)
    zero = np.asarray(q.zero_point, np.float32).reshape(shape)
    return np.clip(np.round(w / scale) + zero, q.quant_min, q.quant_max).astype(np.int8)


def gemm_plan(plan: QuantPlan, module: nn.Module | None = None) -> QuantPlan:
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


def per_row_dynamic(graph: Any) -> Any:
    """A copy of a dynamic-activation PT2E graph that quantizes each Linear input per row, as XNNPACK runs it.

    PT2E's dynamic chain (choose_qparams → quantize → dequantize) is per tensor, but XNNPACK's qd8 GEMMs take it
    as per batch row: a Linear's input gets a scale and zero point per token (a conv's, per image: the same for
    the batch-1 units here). Where tokens span very different ranges the two part: on EfficientTAM's
    prompt_mask_decoder the per-tensor graph sat 24.1 dB from the .pte on `object_score`, an error of the
    reference, not of the artifact. This copy is the reference the artifact is gated against.
    """
    import copy

    import torch

    qd = torch.ops.quantized_decomposed
    ref = copy.deepcopy(graph)
    for node in list(ref.graph.nodes):
        quant = node.args[0] if node.target == qd.dequantize_per_tensor.tensor else None
        if quant is None or getattr(quant, "target", None) != qd.quantize_per_tensor.tensor:
            continue
        qparams = quant.args[1].args[0]  # getitem(choose_qparams(x, qmin, qmax, eps, dtype), 0)
        if getattr(qparams, "target", None) != qd.choose_qparams.tensor:
            continue
        if not all(user.target == torch.ops.aten.linear.default for user in node.users):
            continue
        with ref.graph.inserting_before(node):
            rows = ref.graph.call_function(_fake_quant_rows, (quant.args[0], *qparams.args[1:4]))
        node.replace_all_uses_with(rows)
    ref.graph.eliminate_dead_code()
    ref.recompile()
    return ref


def _fake_quant_rows(x: Any, quant_min: int, quant_max: int, eps: float) -> Any:
    """Asymmetric fake-quant with one scale and zero point per row (last axis), ranges widened to hold 0."""
    import torch

    low = x.amin(dim=-1, keepdim=True).clamp(max=0.0)
    high = x.amax(dim=-1, keepdim=True).clamp(min=0.0)
    scale = ((high - low) / (quant_max - quant_min)).clamp(min=eps)
    zero = torch.clamp(quant_min - torch.round(low / scale), quant_min, quant_max)
    return (torch.clamp(torch.round(x / scale) + zero, quant_min, quant_max) - zero) * scale


def with_module(unit: DeployUnit, graph: nn.Module) -> DeployUnit:
    """`unit` computing with `graph` (a PT2E graph module), put in eval mode."""
    graph.eval()  # PT2E's patched eval() returns None, so not chained
    return dataclasses.replace(unit, module=graph)
