"""edgevit's own quantization methods as the suite runs them: PTQ, MPTQ (SQ-b + PTQ), Q-HyViT, greedy mixed precision.

Every method starts from the same float model with its BatchNorms folded into their convs (`quant.bn_fold`),
because every backend folds before it quantizes: quantizing the unfolded weight would simulate a model no
runtime runs. `ptq` then observes min/max ranges (`collect_stats(...).plan(w, a)`); `mptq` first smooths the
Linears' inputs with SQ-b and its per-layer search (`smooth_quant_`), then calibrates the same way; `qhyvit`
runs the whole Q-HyViT pass (scale search + block reconstruction, bridges joint or not). Mixed precision
spends a weight budget with `greedy_allocate` on the sensitivity table of the prepared model.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import Tensor, nn

from quant.fake_quant import CalibrationStats
from quant.plan import QuantPlan

PLAN_METHODS = ("ptq", "mptq")
VARIANTS = {"ptq": "BN folded, min-max", "mptq": "SQ-b (α searched at these bits) + min-max"}
MIXED_NOTES = {
    "ptq": "",
    "mptq": "SQ-b's α searched at W8A8, kept for every layer's width",
}
SENSITIVITY_IMAGES = 4  # model forwards per (layer, bit-width) probe: the table's cost scales with this


@dataclass
class Prepared:
    """A float model ready to be planned at any bits: BN folded, SQ-b applied for mptq, ranges observed."""

    method: str
    module: nn.Module
    stats: CalibrationStats
    smoothing: dict = field(default_factory=dict)
    seconds: float = 0.0


def fold(module: nn.Module, example: Tensor) -> nn.Module:
    """A copy of `module` with each BatchNorm2d folded into the conv feeding it (the model every backend runs)."""
    from quant.bn_fold import fold_batchnorm

    folded, _ = fold_batchnorm(module, example)
    return folded.eval()


def prepare(method: str, module: nn.Module, calib: Sequence[Tensor], bits: tuple[int, int] = (8, 8)) -> Prepared:
    """Fold, smooth (mptq) and calibrate a copy of `module`; the caller's model is left as it is.

    SQ-b searches each layer's strength α for the quantizer that will run, so mptq is prepared per bit-width
    (`bits`): α searched for 8-bit weights moves range into weights that 4-bit weights then cannot hold.
    """
    from quant.fake_quant import collect_stats
    from quant.smoothquant import smooth_quant_

    if method not in PLAN_METHODS:
        raise ValueError(f"unknown plan method {method!r}; valid: {', '.join(PLAN_METHODS)}")
    start = time.perf_counter()
    model = fold(copy.deepcopy(module), calib[0])
    smoothing = {}
    if method == "mptq":
        smoothing = smooth_quant_(model, list(calib), weight_bits=bits[0], act_bits=bits[1], progress=False)
    stats = collect_stats(model, list(calib), progress=False)
    return Prepared(method, model, stats, smoothing, time.perf_counter() - start)


def uniform_plan(prepared: Prepared, weight_bits: int, act_bits: int) -> QuantPlan:
    """The prepared model's plan at uniform bits, with its SQ-b records attached."""
    plan = prepared.stats.plan(weight_bits, act_bits, method=prepared.method)
    return plan.with_smoothing(prepared.smoothing)


def mixed_plans(
    prepared: Prepared,
    calib: Sequence[Tensor],
    fractions: Sequence[float],
    weight_candidates: Sequence[int] = (4, 6, 8),
) -> tuple[dict[float, QuantPlan], float]:
    """Greedy mixed-precision plans at each fraction of the W8 weight bytes; returns them and the table's seconds.

    One sensitivity table (one layer quantized at a time, activations at 8 bits) serves every budget.
    """
    from quant.metrics import layer_sensitivity
    from quant.mixed_precision import greedy_allocate

    start = time.perf_counter()
    table = layer_sensitivity(
        prepared.module, prepared.stats, list(calib[:SENSITIVITY_IMAGES]), weight_bits=weight_candidates, progress=False
    )
    seconds = time.perf_counter() - start
    w8_bytes = uniform_plan(prepared, 8, 8).weight_bytes()
    plans = {}
    for fraction in fractions:
        plan = greedy_allocate(prepared.stats, table, fraction * w8_bytes / 1e6)
        plans[fraction] = plan.with_smoothing(prepared.smoothing)
    return plans, seconds


def qhyvit(
    module: nn.Module, calib: Sequence[Tensor], weight_bits: int, act_bits: int, joint_bridge: bool, iters: int
) -> tuple[nn.Module, QuantPlan]:
    """Q-HyViT on a copy of a hybrid `module` (bridges taken from the copy, as the method requires); returns
    (fake-quant model, plan)."""
    from quant.qhyvit import qhyvit_quantize

    model = copy.deepcopy(module).eval()
    return qhyvit_quantize(
        model,
        list(calib),
        model.bridge_blocks(),
        weight_bits,
        act_bits,
        joint_bridge=joint_bridge,
        iters=iters,
        progress=False,
    )
