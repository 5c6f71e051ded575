"""Our W4 plans: min-max per-channel (the old grid), group-wise MSE scales, and group-wise MSE + GPTQ rounding.

All three come from one calibration pass (`quant.fake_quant.collect_stats`) and plan every Linear weight at
4 bits: `CalibrationStats.plan(4, 8)` as is, or after `use_groups({4: g}, "mse")` (each group's scale searched
for the least squared error weighted by its columns' E[x²]); GPTQ (`quant.gptq.gptq_`) then rounds on that grid,
writing the dequantized weights back into a copy of the model, so nearest rounding with the plan's scales gives
its integers. Only the Linear layers are kept (the peers quantize those and nothing else).

`weights_only` is the plan's weights in the float model — what the weight-only peers are also scored as; the
real artifacts (ExecuTorch qb4w, ONNX MatMulNBits) are lowered from the same plan by `converters.quantized`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from quant.plan import QuantPlan

METHODS = ("min-max per-channel", "group MSE", "group MSE + GPTQ")


@dataclass
class OurW4:
    """One of our W4 plans with the model it applies to (GPTQ's adjusted weights, or the original)."""

    method: str
    group_size: int | None
    plan: QuantPlan
    model: nn.Module
    info: dict


def linears_only(plan: QuantPlan) -> QuantPlan:
    return plan.subset([name for name, lq in plan.layers.items() if lq.kind == "linear"])


def our_plan(model: nn.Module, calib: list[Tensor], method: str, group_size: int | None, stats=None) -> OurW4:
    """`method` at 4 bits over every Linear of `model`, calibrated on `calib` (pass `stats` to reuse a pass)."""
    from quant.fake_quant import collect_stats

    stats = stats if stats is not None else collect_stats(model, [(x,) for x in calib], progress=False)
    if method == "min-max per-channel":  # `use_groups` changes the shared stats: ask for no groups explicitly
        return OurW4(method, None, linears_only(stats.use_groups({}).plan(4, 8)), model, {})
    stats.use_groups({4: group_size}, "mse")
    plan = linears_only(stats.plan(4, 8))
    if method == "group MSE":
        return OurW4(method, group_size, plan, model, {})
    from quant.gptq import gptq_

    adjusted = copy.deepcopy(model).eval()
    report = gptq_(adjusted, plan, [(x,) for x in calib])
    return OurW4(method, group_size, plan, adjusted, report.info())


@torch.no_grad()
def weights_only(ours: OurW4) -> nn.Module:
    """The float model with each planned Linear weight replaced by its dequantized plan value."""
    from quant.groupwise import fake_quantize_weight

    simulated = copy.deepcopy(ours.model).eval()
    for name, lq in ours.plan.layers.items():
        linear = simulated.get_submodule(name)
        assert lq.weight is not None
        linear.weight.copy_(fake_quantize_weight(linear.weight, lq.weight))
    return simulated


def plan_weight_bytes(plan: QuantPlan, scale_bytes: int = 2) -> int:
    """Bytes of the plan's 4-bit integers (two a byte) and one `scale_bytes` scale per group or channel."""
    total = 0
    for lq in plan.layers.values():
        if lq.weight is not None:
            total += lq.weight_numel * lq.weight.bits // 8 + len(lq.weight.scale) * scale_bytes
    return total
