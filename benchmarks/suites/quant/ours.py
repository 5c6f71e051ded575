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
from quant.errors import QuantError
from quant.plan import QuantPlan

VARIANTS = {
    "ptq": "BN folded, AWQ at 8-bit weights, min-max",
    "mptq": "SQ-b (α searched at these bits), AWQ at 8-bit weights, min-max",
}
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
    """Fold, smooth (mptq, α searched for `bits`) and calibrate a copy of `module`, then, for 8-bit weights, scale
    the LayerNorm-fed Linears' inputs (AWQ), as the quant pass does for a uniform plan; the caller's model is
    left as it is. (Mixed plans prepare through `mixed_plans`, without AWQ, as the pass does.)"""
    prepared = recipe.prepare(method, module, calib, bits)
    if bits[0] == 8:
        recipe.scale_for_8bit(prepared, calib, bits[1])
    return prepared


def uniform_plan(prepared: Prepared, weight_bits: int, act_bits: int) -> QuantPlan:
    """The prepared model's plan at uniform bits, with its SQ-b records attached."""
    return recipe.uniform_plan(prepared, weight_bits, act_bits)


def mixed_plans(
    method: str,
    module: nn.Module,
    calib: Sequence[Tensor],
    fractions: Sequence[float],
    targets: Sequence[str],
) -> tuple[dict[float, QuantPlan | str], Prepared, float, float]:
    """Greedy mixed-precision plans at each fraction of the W8A8 plan's bytes as `targets` store them (the dearest,
    `quant.cost`, as `edgevit quantize --bits mixed` counts a budget), on a fresh prepared copy with the pass's
    4-bit grid (`four_bit_grid` sets the stats' groups, so the shared prepared model's uniform plans are left
    alone). Returns the plans (or why a budget cannot be met), that copy, the W8A8 bytes and the table's seconds.

    One sensitivity table (one layer quantized at a time, activations at 8 bits), over the widths every target
    holds, serves every budget.
    """
    from converters.quantized import WEIGHT_BITS
    from edgevit.pipeline.passes.quant import four_bit_grid, target_bytes

    prepared = recipe.prepare(method, module, calib, recipe.smoothing_bits("mixed"))
    four_bit_grid(prepared, targets)
    start = time.perf_counter()
    widths = sorted(set.intersection(*(set(WEIGHT_BITS[t]) for t in targets)))
    table = recipe.sensitivity(prepared, calib, widths)
    seconds = time.perf_counter() - start
    cost = target_bytes(targets)
    w8_bytes = sum(cost(layer) or 0.0 for layer in uniform_plan(prepared, 8, 8).layers.values())
    plans: dict[float, QuantPlan | str] = {}
    for f in fractions:
        try:
            plans[f] = recipe.mixed_plan(prepared, table, f * w8_bytes / 1e6, cost)
        except QuantError as err:  # e.g. below what uniform 4-bit costs on these targets
            plans[f] = str(err)
    return plans, prepared, w8_bytes, seconds


def qhyvit(
    module: nn.Module, calib: Sequence[Tensor], weight_bits: int, act_bits: int, joint_bridge: bool, iters: int
) -> tuple[nn.Module, QuantPlan]:
    """Q-HyViT on a copy of a hybrid `module`; returns (fake-quant model, plan)."""
    return recipe.qhyvit(module, calib, weight_bits, act_bits, joint_bridge=joint_bridge, iters=iters)
