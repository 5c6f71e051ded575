"""Block-wise reconstruction with learned rounding (AdaRound inside BRECQ-style blocks).

Why: rounding each weight to its nearest grid point is optimal for the weight, not for the output. At 4-6
bits the rounding errors of a block's weights add up coherently in its output; choosing for each weight
whether to round up or down, so that the block output matches the float block, recovers most of that.

The rounding variable per weight, its regulariser and where it starts are `quant.adaround`'s (AdaRound,
with one departure that suits the output-aware scales the plan comes with).

Block granularity (BRECQ): a unit is a chain of the model's own modules run as one (a block, or a conv
block and the attention block it feeds: Q-HyViT's bridge), so rounding is chosen for what the unit hands
on, and errors that cancel inside the unit are allowed to. Units are reconstructed in forward order; each
takes its inputs from the model with every earlier unit already quantized (so it learns to absorb their
error) and its targets from the float model. Activations inside the unit are fake-quantized with the
plan's qparams (straight-through gradients), so rounding is learned against the noise it will run with.

The result is written back into the model as weights that lie exactly on the plan's grid: `w = q·s` with
integer q in range, so any target's own quantizer with the plan's scale gets back exactly q (what the
tests check). A unit whose learned rounding scores no better than nearest rounding on held-out
calibration samples keeps nearest rounding; the report says which was kept.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from rich.progress import Progress
from torch import Tensor, nn

from quant.adaround import AdaRoundLayer
from quant.errors import QuantError
from quant.fake_quant import (
    Batch,
    FakeQuantLayer,
    layer_kind,
    materialize_batches,
    replace_submodule,
    run_batch,
    strip_fake_quant,
)
from quant.plan import LayerQuant, QuantPlan


@dataclass(frozen=True)
class ReconConfig:
    """Optimisation knobs; `iters` per unit is the one that trades time for quality.

    The loss is relative (output MSE over output power) and the regulariser a mean over weights, so
    `reg_weight` means the same for every unit. `checks`: how many times after the warm-up the hardened
    rounding is scored; the best one seen is kept. With the few hundred iterations PTQ can afford, a few
    weights the loss fights the regulariser over stay between 0 and 1, and hardening them at the last step
    can undo the gain; the best hard state on the way does not. `holdout`: the fraction of calibration
    samples kept out of the optimisation and used for those scores and for the learned-vs-nearest choice:
    deep units see few spatial positions per image, so with a small calibration set learned rounding can
    fit the samples rather than the data, and only samples it never trained on show that.
    """

    iters: int = 500
    batch_size: int = 16
    lr: float = 5e-2
    reg_weight: float = 0.1
    beta: tuple[float, float] = (20.0, 2.0)
    warmup: float = 0.0
    init_margin: float = 2.0
    checks: int = 10
    holdout: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.iters < 1 or self.batch_size < 1:
            raise QuantError(f"reconstruction needs iters ≥ 1 and batch_size ≥ 1, got {self.iters}, {self.batch_size}")
        if self.checks < 1:
            raise QuantError(f"checks must be at least 1, got {self.checks}")
        if not 0.0 <= self.holdout < 1.0:
            raise QuantError(f"holdout is a fraction of the calibration samples in [0, 1), got {self.holdout}")
        if not 0.0 <= self.warmup < 1.0:
            raise QuantError(f"warmup is a fraction of the iterations in [0, 1), got {self.warmup}")


@dataclass(frozen=True)
class ReconUnit:
    """Modules (qualified names) that run as a chain: the first's input in, the last's output out."""

    name: str
    modules: tuple[str, ...]

    @property
    def first(self) -> str:
        return self.modules[0]

    @property
    def last(self) -> str:
        return self.modules[-1]

    def contains(self, layer: str) -> bool:
        return any(layer == m or layer.startswith(m + ".") for m in self.modules)


@dataclass
class UnitReport:
    """Relative output MSE of a unit on held-out calibration samples, nearest vs learned rounding."""

    unit: str
    layers: list[str]
    nearest_error: float
    learned_error: float
    kept: str

    @property
    def gain_db(self) -> float:
        return 10.0 * math.log10(self.nearest_error / max(self.learned_error, 1e-30))

    def as_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "layers": self.layers,
            "nearest_error": self.nearest_error,
            "learned_error": self.learned_error,
            "kept": self.kept,
        }


class _Stop(Exception):
    """Raised by a hook once the unit's boundary tensor is captured: the rest of the model is not needed."""


@torch.no_grad()
def capture(model: nn.Module, batches: Sequence[Batch], module: str, what: Literal["inputs", "output"]) -> list[Tensor]:
    """The inputs (`what="inputs"`, one tensor per positional arg) or output of `module`, over all batches.

    Stops each forward pass at `module`, so capturing an early unit costs only the model up to it.
    """
    target = model.get_submodule(module)
    chunks: list[tuple[Tensor, ...]] = []

    def pre_hook(mod: nn.Module, args: tuple) -> None:
        chunks.append(tuple(a.detach() if isinstance(a, Tensor) else a for a in args))
        raise _Stop

    def post_hook(mod: nn.Module, args: tuple, out: Tensor) -> None:
        if not isinstance(out, Tensor):
            raise QuantError(f"unit boundary {module!r} returns {type(out).__name__}; it must return one tensor")
        chunks.append((out.detach(),))
        raise _Stop

    handle = target.register_forward_pre_hook(pre_hook) if what == "inputs" else target.register_forward_hook(post_hook)
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            try:
                run_batch(model, batch)
            except _Stop:
                continue
            raise QuantError(f"module {module!r} did not run on a calibration batch: it cannot bound a unit")
    finally:
        handle.remove()
        model.train(was_training)
    if any(not isinstance(a, Tensor) for c in chunks for a in c):
        raise QuantError(f"unit {module!r} takes non-tensor arguments; units must take tensors only")
    return [torch.cat(parts) for parts in zip(*chunks, strict=True)]


def _chain(model: nn.Module, unit: ReconUnit) -> nn.Sequential:
    return nn.Sequential(*(model.get_submodule(m) for m in unit.modules))


def _relative_error(run: nn.Module, inputs: list[Tensor], targets: Tensor, chunk: int) -> float:
    with torch.no_grad():
        err = sum(
            (run(*(x[i : i + chunk] for x in inputs)) - targets[i : i + chunk]).pow(2).sum().item()
            for i in range(0, targets.shape[0], chunk)
        )
    return err / max(targets.pow(2).sum().item(), 1e-30)


def reconstruct_unit(
    model: nn.Module,
    unit: ReconUnit,
    layers: dict[str, LayerQuant],
    inputs: list[Tensor],
    targets: Tensor,
    config: ReconConfig,
    progress: Progress | None = None,
) -> UnitReport:
    """Learn the rounding of `layers` (all inside `unit`) so the unit maps `inputs` to `targets`.

    Leaves each layer in `model` as a `FakeQuantLayer` over on-grid weights (learned or nearest, whichever
    scored lower on the held-out samples), so the next unit sees this one quantized.
    """
    wrappers = {name: AdaRoundLayer(model.get_submodule(name), lq, config.init_margin) for name, lq in layers.items()}
    for name, wrapper in wrappers.items():
        replace_submodule(model, name, wrapper)
    run = _chain(model, unit)
    rounded = [w for w in wrappers.values() if w.v is not None]
    params = [w.v for w in rounded]
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(targets.shape[0], generator=generator)
    held = int(config.holdout * targets.shape[0])
    fit, check = order[held:], (order[:held] if held else order)
    n = fit.numel()
    signal = targets[fit].pow(2).mean().clamp(min=1e-30)
    numel = sum(p.numel() for p in params)
    # `iters` is per block, so a bridge reconstructed as one unit gets the budget of its blocks apart
    iters = config.iters * sum(any(ReconUnit(m, (m,)).contains(name) for name in layers) for m in unit.modules)
    task = progress.add_task(f"reconstruct {unit.name}", total=iters) if progress is not None else None
    chunk = config.batch_size * 4
    check_inputs, check_targets = [x[check] for x in inputs], targets[check]

    def hard_error() -> float:
        for w in wrappers.values():
            w.mode = "hard"
        err = _relative_error(run, check_inputs, check_targets, chunk)
        for w in wrappers.values():
            w.mode = "soft"
        return err

    for w in wrappers.values():
        w.mode = "nearest"
    nearest = _relative_error(run, check_inputs, check_targets, chunk)
    best_error, best_signs = math.inf, [p.detach() >= 0 for p in params]
    if params:
        optimizer = torch.optim.Adam(params, lr=config.lr)
        warm = int(config.warmup * iters)
        every = max((iters - warm) // config.checks, 1)
        for w in wrappers.values():
            w.mode = "soft"
        for it in range(iters):
            idx = fit[torch.randint(n, (min(config.batch_size, n),), generator=generator)]
            loss = (run(*(x[idx] for x in inputs)) - targets[idx]).pow(2).mean() / signal
            if it >= warm:
                t = (it - warm) / max(iters - warm, 1)
                beta = config.beta[1] + (config.beta[0] - config.beta[1]) * (1.0 - t)
                loss = loss + config.reg_weight * sum(w.regularizer(beta) for w in rounded) / numel
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done = it + 1
            if done > warm and ((done - warm) % every == 0 or done == iters):
                err = hard_error()
                if err < best_error:
                    best_error, best_signs = err, [p.detach() >= 0 for p in params]
            if progress is not None and task is not None:
                progress.advance(task)
        with torch.no_grad():  # v's sign is all the hard rounding reads: restore the best state's signs
            for p, signs in zip(params, best_signs, strict=True):
                p.copy_(torch.where(signs, p.abs().clamp(min=1e-6), -p.abs().clamp(min=1e-6)))
    kept = "hard" if best_error < nearest else "nearest"
    for name, wrapper in wrappers.items():
        wrapper.mode = kept
        inner = wrapper.inner
        if wrapper.v is not None:
            with torch.no_grad():
                inner.weight.copy_(wrapper.weight_q())
        replace_submodule(model, name, FakeQuantLayer(inner, layers[name]))
    if progress is not None and task is not None:
        progress.remove_task(task)
    return UnitReport(
        unit=unit.name,
        layers=list(layers),
        nearest_error=nearest,
        learned_error=best_error if params else nearest,
        kept="learned" if kept == "hard" else "nearest",
    )


def reconstruct(
    model: nn.Module,
    batches: Iterable[Batch],
    plan: QuantPlan,
    units: Sequence[ReconUnit],
    config: ReconConfig | None = None,
    *,
    min_batches: int = 1,
    progress: bool = True,
) -> list[UnitReport]:
    """Reconstruct `units` in order, in place: afterwards every planned weight in them lies on the plan's grid.

    `model` is the float model the plan was made for (BN already folded); it is returned to float modules
    (no fake-quant wrappers), with the reconstructed weights, so `apply_plan(model, plan)` gives the
    quantized model. Planned layers outside every unit keep their float weights (nearest rounding at
    `apply_plan`). `units` must be in forward order and must not share a layer.
    """
    config = config or ReconConfig()
    batches = materialize_batches(batches, min_batches, "reconstruction")
    owners: dict[str, str] = {}
    unit_layers: list[dict[str, LayerQuant]] = []
    for unit in units:
        for m in unit.modules:
            try:
                model.get_submodule(m)
            except AttributeError:
                raise QuantError(f"unit {unit.name!r} names module {m!r}, which is not in the model") from None
        mine = {name: lq for name, lq in plan.layers.items() if unit.contains(name)}
        for name in mine:
            if name in owners:
                raise QuantError(f"layer {name!r} is in two units, {owners[name]!r} and {unit.name!r}")
            owners[name] = unit.name
        for name, lq in mine.items():
            if layer_kind(model.get_submodule(name)) != lq.kind:
                raise QuantError(f"plan says {name!r} is {lq.kind}, the model has another kind of layer")
        unit_layers.append(mine)

    reference = copy.deepcopy(model).eval()
    reports = []
    was_training = model.training
    trainable = {p: p.requires_grad for p in model.parameters()}
    for p in trainable:  # only the rounding variables learn; model parameters collect no gradients
        p.requires_grad_(False)
    model.eval()
    try:
        with Progress(transient=True, disable=not progress) as bar:
            overall = bar.add_task("Q-HyViT reconstruction", total=len(units))
            for unit, layers in zip(units, unit_layers, strict=True):
                if layers:
                    inputs = capture(model, batches, unit.first, "inputs")
                    (targets,) = capture(reference, batches, unit.last, "output")
                    reports.append(reconstruct_unit(model, unit, layers, inputs, targets, config, bar))
                bar.advance(overall)
    finally:
        strip_fake_quant(model)
        for module in model.modules():  # a failure mid-unit leaves AdaRound wrappers: put the layers back
            for child_name, child in list(module.named_children()):
                if isinstance(child, AdaRoundLayer):
                    setattr(module, child_name, child.inner)
        for p, flag in trainable.items():
            p.requires_grad_(flag)
        model.train(was_training)
    return reports
