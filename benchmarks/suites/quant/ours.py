"""edgevit's own quantization methods as the suite runs them: PTQ, MPTQ (SQ-b + PTQ), Q-HyViT, greedy mixed precision.

These are the quant pass's own steps (`edgevit.pipeline.passes.quant_recipe`), so the suite measures exactly the
recipe `edgevit quantize` ships: BN folded first, SQ-b's α searched for the bits that will run, min/max ranges,
Q-HyViT with joint bridges, greedy mixed precision on one sensitivity table. The suite asks for more settings
(activation bits, every budget from one table, the bridge ablation) than a command does, never for other steps.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from torch import Tensor, nn

from edgevit.pipeline.passes import quant_recipe as recipe
from edgevit.pipeline.passes.quant_recipe import PLAN_METHODS, SENSITIVITY_IMAGES, Prepared
from quant.plan import QuantPlan

VARIANTS = {"ptq": "BN folded, min-max", "mptq": "SQ-b (α searched at these bits) + min-max"}
MIXED_NOTES = {
    "ptq": "",
    "mptq": "SQ-b's α searched at W8A8, kept for every layer's width",
}

__all__ = [
    "MIXED_NOTES",
    "PLAN_METHODS",
    "SENSITIVITY_IMAGES",
    "VARIANTS",
    "Prepared",
    "mixed_plans",
    "prepare",
    "qhyvit",
    "uniform_plan",
]


def prepare(method: str, module: nn.Module, calib: Sequence[Tensor], bits: tuple[int, int] = (8, 8)) -> Prepared:
    """Fold, smooth (mptq, α searched for `bits`) and calibrate a copy of `module`, as the quant pass does; the
    caller's model is left as it is."""
    return recipe.prepare(method, module, calib, bits)


def uniform_plan(prepared: Prepared, weight_bits: int, act_bits: int) -> QuantPlan:
    """The prepared model's plan at uniform bits, with its SQ-b records attached."""
    return recipe.uniform_plan(prepared, weight_bits, act_bits)


def mixed_plans(
    prepared: Prepared,
    calib: Sequence[Tensor],
    fractions: Sequence[float],
    weight_candidates: Sequence[int] = (4, 6, 8),
) -> tuple[dict[float, QuantPlan], float]:
    """Greedy mixed-precision plans at each fraction of the W8 weight bytes; returns them and the table's seconds.

    One sensitivity table (one layer quantized at a time, activations at 8 bits) serves every budget.
    """
    start = time.perf_counter()
    table = recipe.sensitivity(prepared, calib, weight_candidates)
    seconds = time.perf_counter() - start
    w8_bytes = uniform_plan(prepared, 8, 8).weight_bytes()
    return {f: recipe.mixed_plan(prepared, table, f * w8_bytes / 1e6) for f in fractions}, seconds


def qhyvit(
    module: nn.Module, calib: Sequence[Tensor], weight_bits: int, act_bits: int, joint_bridge: bool, iters: int
) -> tuple[nn.Module, QuantPlan]:
    """Q-HyViT on a copy of a hybrid `module`; returns (fake-quant model, plan)."""
    return recipe.qhyvit(module, calib, weight_bits, act_bits, joint_bridge=joint_bridge, iters=iters)
