"""The one quantization recipe: what `edgevit quantize`/`convert --quant` ship and the quant suite measures.

Every method starts from the float model with its BatchNorms folded into their convs (`quant.bn_fold`), because
every backend folds before it quantizes: quantizing the unfolded weight would simulate a model no runtime runs.
`ptq` then observes min/max ranges; `mptq` first smooths the Linears' inputs with SQ-b, its strength α searched
per layer for the bits that will run (α searched for 8-bit weights moves range into weights that 4-bit weights
cannot hold), then calibrates the same way; `qhyvit` runs the whole Q-HyViT pass (scale search + block
reconstruction, the hybrid's conv→attention bridges jointly). Mixed precision spends a weight budget with
`greedy_allocate` on a sensitivity table of the prepared model (SQ-b's α searched at W8A8 for it).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import Tensor, nn

from quant.fake_quant import CalibrationStats
from quant.plan import QuantPlan

PLAN_METHODS = ("ptq", "mptq")  # methods planned from observed ranges (qhyvit reconstructs weights)
GROUP_SIZE_4BIT = 32  # input columns per 4-bit scale (MatMulNBits, XNNPACK and Core ML all take 32)
SENSITIVITY_IMAGES = 4  # model forwards per (layer, bit-width) probe: the table's cost scales with this

Batch = tuple[Tensor, ...]


@dataclass
class Prepared:
    """A float model ready to be planned: BN folded, SQ-b applied for mptq, ranges observed."""

    method: str
    module: nn.Module
    stats: CalibrationStats
    smoothing: dict = field(default_factory=dict)
    seconds: float = 0.0
    bn_folded: list[tuple[str, str]] = field(default_factory=list)


def smoothing_bits(bits: str) -> tuple[int, int]:
    """The (weight, activation) bits SQ-b's α is searched for: the requested width, W8A8 for mixed precision."""
    return (8, 8) if bits == "mixed" else (int(bits), 8)


def prepare(
    method: str, module: nn.Module, calib: Sequence[Batch | Tensor], bits: tuple[int, int] = (8, 8), bars: bool = False
) -> Prepared:
    """Fold, smooth (mptq, α searched for `bits`) and calibrate a copy of `module`; the caller's model is left
    as it is."""
    from quant.bn_fold import fold_batchnorm
    from quant.fake_quant import collect_stats
    from quant.smoothquant import smooth_quant_

    if method not in PLAN_METHODS:
        raise ValueError(f"unknown plan method {method!r}; valid: {', '.join(PLAN_METHODS)}")
    start = time.perf_counter()
    model, folded = fold_batchnorm(module, calib[0])  # an eval-mode copy
    expose_attention_matmuls(model)
    smoothing = {}
    if method == "mptq":
        smoothing = smooth_quant_(model, list(calib), weight_bits=bits[0], act_bits=bits[1], progress=bars)
    stats = collect_stats(model, list(calib), progress=bars)
    return Prepared(method, model, stats, smoothing, time.perf_counter() - start, folded)


def expose_attention_matmuls(model: nn.Module) -> int:
    """Switch attention written with `MatMul` modules but fused by default (a module with an
    `explicit_matmuls` attribute, e.g. EfficientTAM's image encoder) to its explicit matmuls, so the plan
    quantizes Q·Kᵀ and A·V too and the integer targets run them int8. Returns how many were switched."""
    switched = [m for m in model.modules() if hasattr(m, "explicit_matmuls")]
    for m in switched:
        m.explicit_matmuls = True
    return len(switched)


def scale_inputs(
    prepared: Prepared, calib: Sequence[Batch | Tensor], weight_bits: int, group_size: int | None, act_bits: int = 8
) -> int:
    """AWQ input-channel scaling (`quant.awq`) of the prepared model's LayerNorm-fed Linears that SQ-b left alone,
    α searched for `weight_bits` weights on `group_size`-column groups (None: per-channel min-max), then the ranges
    observed again (the LayerNorm outputs changed). Folded into the weights and LayerNorms, so every target lowers
    it as it is; the records join `prepared.smoothing` (replayable like SQ-b's). Returns how many Linears were
    scaled.

    Measured on DINOv2-S (8 calibration / 8 held-out images, benchmarks/results/quant_mixed.md): W4A8 g32 held-out
    SQNR 25.8 → 27.4 dB; W8A8 33.4 → 37.8 dB (the divided channels are the LayerNorm outliers that set the 8-bit
    input grids: see `scale_for_8bit`)."""
    from quant.awq import awq_scale_
    from quant.fake_quant import collect_stats, quantizable_layers
    from quant.modules import SmoothedLinear

    free = [
        name
        for name, kind in quantizable_layers(prepared.module).items()
        if kind == "linear"
        and name not in prepared.smoothing
        and not isinstance(prepared.module.get_submodule(name), SmoothedLinear)
    ]
    if len(calib) < 2 or not free:  # α is chosen on held-out calibration batches: one leaves nothing to hold out
        return 0
    records = awq_scale_(
        prepared.module, list(calib), bits=weight_bits, group_size=group_size, act_bits=act_bits, layers=free
    )
    if records:
        prepared.stats = collect_stats(prepared.module, list(calib), progress=False)
        prepared.smoothing = {**prepared.smoothing, **records}
    return len(records)


def scale_for_8bit(prepared: Prepared, calib: Sequence[Batch | Tensor], act_bits: int = 8) -> int:
    """AWQ for uniform 8-bit weights (ptq, and mptq's LayerNorm-fed Linears SQ-b left alone): the 8-bit grid of a
    Linear's input is per tensor, so a few LayerNorm outlier channels set its step for every channel; dividing
    them (and multiplying their weight columns) narrows it. α is searched for the grid the plan runs: per-channel
    min-max 8-bit weights, per-tensor asymmetric inputs. Returns how many Linears were scaled.

    Against the 4-bit g32 objective uniform `--bits 4` uses: DINOv2-S, ptq W8A8, the quant suite's images (16
    calibration; 16 held out, 14 of them video frames), held-out SQNR whole / video frames: no AWQ 34.9 / 35.2 dB,
    this objective 35.9 / 35.8 dB (α 0.3–0.8 on 23 Linears, 47 s), the g32 one 36.2 / 36.1 dB (α 0.1–0.4, 80 s;
    load ≈5 on 2 cores). Kept this one: on the tests' tiny ViT (LayerNorm gains ~20×) this one gains 1.3 dB over no
    AWQ (34.6 → 35.8) where the g32 one loses 0.5 (→ 34.1), and it costs less (EfficientTAM ti_512 image encoder, 8
    images: 20 s vs 27 s, beside 8 s for the rest of the preparation). The α choice rides on the sampled rows:
    since AWQ observes only the LayerNorm-fed Linears (other rows drawn), the quant suite measures this objective
    at 37.0 / 38.6 dB (benchmarks/results/quant.md). mptq's SQ-b smooths every LayerNorm-fed Linear of DINOv2-S
    (39.4 / 39.6 dB), leaving AWQ nothing there."""
    return scale_inputs(prepared, calib, 8, None, act_bits)


def uniform_plan(prepared: Prepared, weight_bits: int, act_bits: int) -> QuantPlan:
    """The prepared model's plan at uniform bits, with its SQ-b records attached."""
    plan = prepared.stats.plan(weight_bits, act_bits, method=prepared.method)
    return plan.with_smoothing(prepared.smoothing)


def round_weights(
    prepared: Prepared, plan: QuantPlan, calib: Sequence[Batch | Tensor], rounding: str = "gptq"
) -> nn.Module:
    """The module `plan` is lowered from: `prepared.module` itself for `rounding="nearest"` (or when the plan has no
    4-bit Linear), else a copy whose 4-bit Linear weights GPTQ rounded on the plan's own grid (`quant.gptq`:
    error-compensating, damped for the few calibration images a user brings). The plan is unchanged, so every
    target lowers the copy with nearest rounding; `prepared` stays as it was for the next plan.

    Not the quant pass's default: on DINOv2-S (g32 MSE scales, 16 calibration images) GPTQ on every Linear moved
    held-out SQNR by -1.0 to +0.3 dB (qkv alone +4.8 dB, fc2 alone -0.6 dB) for ~100 s; on the tests' tiny ViT
    it gains ~10 dB. Offered as an option (e.g. a pass's `weight_rounding = "gptq"`)."""
    from quant.gptq import gptq_

    if rounding not in ("gptq", "nearest"):
        raise ValueError(f"unknown weight rounding {rounding!r}; valid: gptq, nearest")
    four_bit = [n for n, lq in plan.layers.items() if lq.kind == "linear" and lq.weight_bits == 4]
    if rounding == "nearest" or not four_bit:
        return prepared.module
    module = copy.deepcopy(prepared.module)
    report = gptq_(module, plan, list(calib))
    plan.metadata["weight_rounding"] = report.info()
    return module


def sensitivity(prepared: Prepared, calib: Sequence[Batch | Tensor], weight_bits: Sequence[int], bars: bool = False):
    """Output SQNR with one layer quantized at a time at each weight width (activations at 8 bits): one table
    serves every budget."""
    from quant.metrics import layer_sensitivity

    return layer_sensitivity(
        prepared.module, prepared.stats, list(calib[:SENSITIVITY_IMAGES]), weight_bits=weight_bits, progress=bars
    )


def mixed_plan(prepared: Prepared, table, budget_mb: float, weight_cost=None) -> QuantPlan:
    """The greedy mixed-precision plan that fits `budget_mb` of weights as `weight_cost` counts them (default the
    packed payload; the quant pass's `target_bytes` for what the targets store), with the SQ-b records attached."""
    from quant.mixed_precision import greedy_allocate

    plan = greedy_allocate(prepared.stats, table, budget_mb, weight_cost=weight_cost)
    return plan.with_smoothing(prepared.smoothing)


def qhyvit(
    module: nn.Module,
    calib: Sequence[Batch | Tensor],
    weight_bits: int,
    act_bits: int = 8,
    joint_bridge: bool = True,
    iters: int = 200,
    bars: bool = False,
) -> tuple[nn.Module, QuantPlan]:
    """Q-HyViT on a copy of `module` (its bridge blocks, where it declares them, taken from the copy as the
    method requires); returns (fake-quant model, plan)."""
    from quant.qhyvit import bridges_of, qhyvit_quantize

    model = copy.deepcopy(module).eval()
    return qhyvit_quantize(
        model,
        list(calib),
        bridges_of(model),
        weight_bits,
        act_bits,
        joint_bridge=joint_bridge,
        iters=iters,
        progress=bars,
    )
