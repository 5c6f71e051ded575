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


def with_module(unit: DeployUnit, graph: nn.Module) -> DeployUnit:
    """`unit` computing with `graph` (a PT2E graph module), put in eval mode."""
    graph.eval()  # PT2E's patched eval() returns None, so not chained
    return dataclasses.replace(unit, module=graph)
