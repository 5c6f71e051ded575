"""`prune_module`: score, select and remove heads and MLP channels of a module in place, then optionally recover.

The module is changed in place (its linears shrink, `num_heads` drops) so it can stay a submodule of a model
whose other parts and passes keep using it. The budget is a fraction of the module's parameters, of its FLOPs on
one calibration input, or of its latency as the caller measures it (e.g. ONNX Runtime here): then the share of
parameters to remove is bisected on pruned copies until the measured latency fits, since latency is what a
deployment pays and neither parameters nor FLOPs predict it well (attention's cost does not fall with heads
the way a GEMM's does). The report says what was removed and what each block kept.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from edgevit.compress.prune import budget as budgets
from edgevit.compress.prune import scores as scoring
from edgevit.compress.prune.blocks import prunable_blocks
from edgevit.compress.prune.measure import Batch, count_flops, count_params, outputs
from edgevit.compress.prune.recover import recover, relative_mse
from edgevit.compress.prune.scores import Loss
from edgevit.errors import EdgevitError

SCORES = ("magnitude", "taylor", "activation")
BY = ("params", "flops", "latency")
LATENCY_STEPS = 6  # bisection steps on the parameter share: within 1/64 of the largest removable share
MIN_CHANNEL_FRACTION = 1 / 16  # an MLP thinner than this stops being one; every block keeps at least this share


class BudgetError(EdgevitError):
    """A budget larger than what the blocks may lose; `most` is the largest fraction that fits."""

    def __init__(self, message: str, most: float) -> None:
        super().__init__(message)
        self.most = most


@dataclass(frozen=True)
class PruneSettings:
    """How to prune: `budget` is the fraction of the module's `by` (parameters or FLOPs) to remove, in (0, 1);
    `score` ranks heads and channels (see `scores`); `recover_steps` Adam steps of distillation afterwards."""

    budget: float
    score: str = "activation"
    by: str = "params"
    recover_steps: int = 0
    recover_lr: float = 1e-4
    # Per-layer normalisation before the global ranking (see `budget`); None: "none" for taylor, whose scores
    # estimate the loss increase and so compare across layers, "mean" for magnitude and activation, whose do not
    # (measured on DINOv2-S at 10 % and 30 % of parameters removed).
    normalize: str | None = None
    probes: int = 2  # Taylor: random output directions per calibration input
    min_heads: int = 1
    min_channel_fraction: float = MIN_CHANNEL_FRACTION
    seed: int = 0

    def check(self) -> None:
        if not 0.0 < self.budget < 1.0:
            raise EdgevitError(f"prune budget {self.budget} is not a fraction in (0, 1); e.g. 0.3 removes 30 %")
        if self.score not in SCORES:
            raise EdgevitError(f"unknown prune score {self.score!r}; valid: {', '.join(SCORES)}")
        if self.by not in BY:
            raise EdgevitError(f"unknown prune budget kind {self.by!r}; valid: {', '.join(BY)}")
        if self.normalize is not None and self.normalize not in budgets.NORMALIZE:
            raise EdgevitError(f"unknown normalisation {self.normalize!r}; valid: {', '.join(budgets.NORMALIZE)}")
        if self.recover_steps < 0 or self.probes < 1 or self.min_heads < 1:
            raise EdgevitError("recover_steps must be ≥ 0, probes ≥ 1 and min_heads ≥ 1")


@dataclass
class BlockKept:
    """One block after pruning: its path in the module and what it kept of what it had."""

    name: str
    heads: int
    heads_before: int
    channels: int
    channels_before: int


@dataclass
class PruneReport:
    """What `prune_module` did, as plain data (`to_json` for a manifest)."""

    score: str
    budget: float
    by: str
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    blocks: list[BlockKept] = field(default_factory=list)
    recover_steps: int = 0
    recover_loss: tuple[float, float] | None = None  # mean distillation loss before and after recovery
    latency_ms: tuple[float, float] | None = None  # by latency: measured before and after

    @property
    def params_removed(self) -> float:
        return 1.0 - self.params_after / self.params_before

    @property
    def flops_removed(self) -> float:
        return 1.0 - self.flops_after / self.flops_before if self.flops_before else 0.0

    def to_json(self) -> dict[str, Any]:
        found = asdict(self)
        found["recover_loss"] = None if self.recover_loss is None else list(self.recover_loss)
        found["latency_ms"] = None if self.latency_ms is None else list(self.latency_ms)
        return found


Latency = Callable[[nn.Module], float]  # ms of one call of a (pruned copy of the) module, measured


def prune_module(
    module: nn.Module,
    settings: PruneSettings,
    inputs: Sequence[Batch],
    loss: Loss | None = None,
    latency: Latency | None = None,
) -> PruneReport:
    """Prune `module` in place under `settings`, scored on `inputs` (calibration batches, positional tensors).

    `loss(pruned_out, reference_out) -> scalar` measures what pruning costs (default: relative MSE of the
    outputs, label-free); it shapes the Taylor score and the recovery. `latency` times a module (required when
    the budget is in latency). Raises `EdgevitError` when the module has no prunable block or the budget asks
    for more than the blocks can lose.
    """
    settings.check()
    if settings.by == "latency" and latency is None:
        raise EdgevitError("a latency budget needs a way to time the module (pass `latency`)")
    blocks = prunable_blocks(module)
    if not blocks:
        raise EdgevitError(f"{type(module).__name__} has no prunable transformer block (a ViT or EfficientTAM block)")
    if not inputs:
        raise EdgevitError("pruning needs at least one calibration input")
    module.eval()
    params_before, flops_before = count_params(module), count_flops(module, inputs[0])
    if settings.by in ("params", "latency"):
        costs, total = budgets.param_costs(blocks), params_before
    else:
        costs, total = budgets.flop_costs(module, blocks, inputs[0]), flops_before
    most = budgets.removable(blocks, costs, settings.min_heads, settings.min_channel_fraction)
    if settings.by != "latency" and settings.budget * total > most:
        raise BudgetError(
            f"a prune budget of {settings.budget:g} asks for more {settings.by} than {type(module).__name__}'s blocks "
            f"hold: at most {most / total:.3f} can go (each block keeps {settings.min_heads} head(s) and 1/"
            f"{round(1 / settings.min_channel_fraction)} of its MLP channels); use a budget below {most / total:.2f}",
            most / total,
        )
    references = outputs(module, inputs) if settings.recover_steps else []
    found = _scores(module, blocks, settings, inputs, loss)
    before = [(b.name, b.num_heads, b.hidden) for b in blocks]
    share, timed = settings.budget * total, None
    if settings.by == "latency":
        share, timed = _share_for_latency(module, found, costs, most, settings, latency)
    _remove(blocks, found, costs, share, settings)
    recovered = None
    if settings.recover_steps:
        recovered = recover(
            module, inputs, references, settings.recover_steps, settings.recover_lr, loss or relative_mse
        )
    kept = [BlockKept(n, b.num_heads, h, b.hidden, c) for (n, h, c), b in zip(before, blocks, strict=True)]
    return PruneReport(
        score=settings.score,
        budget=settings.budget,
        by=settings.by,
        params_before=params_before,
        params_after=count_params(module),
        flops_before=flops_before,
        flops_after=count_flops(module, inputs[0]),
        blocks=kept,
        recover_steps=settings.recover_steps,
        recover_loss=recovered,
        latency_ms=timed,
    )


def _remove(blocks: list, found, costs, share: float, settings: PruneSettings) -> None:
    """Remove the least important heads and channels worth `share` of the costs."""
    keep = budgets.select(
        blocks, found, costs, share, settings.min_heads, settings.min_channel_fraction,
        settings.normalize or ("none" if settings.score == "taylor" else "mean"),
    )  # fmt: skip
    for b, (heads, channels) in zip(blocks, keep, strict=True):
        b.keep_heads(heads)
        b.keep_channels(channels)


def _share_for_latency(
    module: nn.Module, found, costs, most: float, settings: PruneSettings, latency: Latency
) -> tuple[float, tuple[float, float]]:
    """The smallest parameter share (of `costs`) whose pruned copy runs within (1 - budget) of the module's
    measured latency, by bisection (latency falls with the share, up to timing noise); (share, (ms before, after))."""

    def timed(share: float) -> float:
        trial = copy.deepcopy(module)
        _remove(prunable_blocks(trial), found, costs, share, settings)
        return latency(trial)

    before = latency(module)
    goal = (1.0 - settings.budget) * before
    low, high = 0.0, most
    fastest = timed(high)
    if fastest > goal:
        reachable = 1.0 - fastest / before
        raise BudgetError(
            f"a latency budget of {settings.budget:g} asks {type(module).__name__} for {goal:.2f} ms, but with "
            f"every removable head and channel gone it runs in {fastest:.2f} ms (of {before:.2f}); use a budget "
            f"below {reachable:.2f}",
            max(reachable, 0.0),
        )
    after = fastest
    for _ in range(LATENCY_STEPS):
        middle = (low + high) / 2
        ms = timed(middle)
        if ms <= goal:
            high, after = middle, ms
        else:
            low = middle
    return high, (before, after)


def _scores(module: nn.Module, blocks: list, settings: PruneSettings, inputs: Sequence[Batch], loss: Loss | None):
    if settings.score == "magnitude":
        return scoring.magnitude(blocks)
    if settings.score == "activation":
        return scoring.activation(module, blocks, inputs)
    return scoring.taylor(module, blocks, inputs, loss, settings.probes, settings.seed)
