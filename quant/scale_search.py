"""Output-aware (Hessian-guided) scale search per layer, with the granularity and scheme chosen per layer.

Why not min-max or OMSE: both minimise the error of the *tensor*, but what matters is the error of the
model output, and layers differ by orders of magnitude in how much of their output error survives to it
(PTQ4ViT's observation, which Q-HyViT builds on). The second-order expansion of the output error in a
layer output O gives E[δOᵀ JᵀJ δO], J the Jacobian of the model output w.r.t. O; keeping the diagonal,

    loss(Ô) = Σ h ⊙ (Ô - O)²,   h = diag(JᵀJ) per element of O.

h is estimated without labels by random projections: for r ~ N(0, I), g = Jᵀr has E[g²] = diag(JᵀJ), so
one backward pass of ⟨model(x), r⟩ per calibration batch yields h for every layer at once (the
Gauss-Newton diagonal of the output MSE, Hutchinson-style). Layers whose output does not reach the model
output get h = 1 (plain output MSE).

Per layer, on calibration samples and alternating weights and activations for `rounds` rounds:
- weights (symmetric, as every backend's int kernels want): per-tensor vs per-channel, each scale
  `base·α` with α on a grid; per channel the loss splits by output channel, so every channel gets its own α;
- activations, per input: asymmetric vs symmetric (and per-tensor vs per-channel where allowed), each on
  the same grid of shrink factors. Symmetric wins where the distribution is centred (post-LayerNorm) and
  costs no zero-point arithmetic; asymmetric where it is one-sided (post-SiLU/GELU, BN-shifted maps).
- zero-point overflow: an asymmetric range that excludes 0 (bridge blocks hand over maps whose BN bias
  shifted them far from 0) puts the zero-point outside the integer range. `guard_zero_point` clamps it, which
  keeps 0 exactly representable (padding, masks) and every backend's zero-point check satisfied, and that
  clamped candidate then competes with the widened and symmetric ones on the loss.
Min-max is scored too and kept if the search did not beat it, so the search is never worse on its metric.

Log2 quantizers for post-softmax/post-GELU values are not offered: a plan entry is uniform integer qparams
(that is what XNNPACK, ORT QDQ and Core ML run), and softmax outputs are never a quantized input here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import Tensor, nn

from quant.errors import QuantError
from quant.fake_quant import Batch, layer_inputs, materialize_batches, quantizable_layers, run_batch
from quant.metrics import _flatten_output
from quant.observers import _MIN_SCALE, fake_quantize, qparams_from_range, quant_range
from quant.plan import Granularity, LayerKind, LayerQuant, QuantPlan, TensorQParams

Scheme = Literal["asymmetric", "symmetric"]

DEFAULT_GRID: tuple[float, ...] = tuple(round(0.3 + 0.02 * i, 2) for i in range(36))  # 0.30 … 1.00


@dataclass(frozen=True)
class SearchConfig:
    """What the search may choose from and how much data it looks at.

    `act_granularities` defaults to per-tensor only: XNNPACK and ORT run per-tensor activations, so
    per-channel activation qparams (which tame the most dynamic maps) are a simulation-only opt-in.
    `max_bytes` bounds what is held at once (each layer's inputs, output and h on `max_samples` samples):
    layers are searched in groups that fit, one forward and backward pass over the samples per group.
    """

    grid: tuple[float, ...] = DEFAULT_GRID
    rounds: int = 2
    max_samples: int = 32
    max_bytes: int = 1 << 30
    probes: int = 1
    weight_granularities: tuple[Granularity, ...] = ("per_channel", "per_tensor")
    act_granularities: tuple[Granularity, ...] = ("per_tensor",)
    act_schemes: tuple[Scheme, ...] = ("asymmetric", "symmetric")
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.grid or any(not 0.0 < a <= 2.0 for a in self.grid):
            raise QuantError(f"scale grid must be non-empty multipliers in (0, 2], got {self.grid}")
        if self.rounds < 1 or self.max_samples < 1 or self.probes < 1 or self.max_bytes < 1:
            raise QuantError("rounds, max_samples, max_bytes and probes must all be at least 1")
        if not self.weight_granularities or not self.act_granularities or not self.act_schemes:
            raise QuantError("give at least one weight granularity, activation granularity and scheme")


@dataclass
class LayerSearch:
    """How one layer's qparams were chosen, in the search's own loss (Hessian-weighted output error)."""

    name: str
    kind: LayerKind
    loss: float
    minmax_loss: float
    weight_granularity: Granularity | None
    act_choices: list[str]
    zero_point_clamped: bool

    @property
    def gain_db(self) -> float:
        """How much lower than min-max the loss is, in dB (0 where min-max was kept)."""
        if self.loss <= 0.0:
            return math.inf
        return 10.0 * math.log10(self.minmax_loss / self.loss)


@dataclass
class SearchResult:
    plan: QuantPlan
    layers: dict[str, LayerSearch] = field(default_factory=dict)


def guard_zero_point(lo: Tensor, hi: Tensor, bits: int) -> tuple[Tensor, Tensor, Tensor]:
    """Asymmetric (scale, zero_point) mapping [lo, hi] itself (not widened to 0), zero-point clamped.

    Returns (scale, zero_point, overflowed). Where the range excludes 0 the exact zero-point lies outside
    [qmin, qmax]; clamping it shifts the grid so that 0 sits at one end of it and the far end of the range is
    clipped instead, which the search then weighs against widening the range or going symmetric.
    """
    qmin, qmax = quant_range(bits, symmetric=False)
    lo64, hi64 = lo.to(torch.float64), hi.to(torch.float64)
    scale = ((hi64 - lo64) / (qmax - qmin)).to(torch.float32).clamp(min=_MIN_SCALE)
    raw = torch.round(qmin - lo64 / scale.to(torch.float64))
    overflowed = (raw < qmin) | (raw > qmax)
    return scale, raw.clamp(qmin, qmax).to(torch.int64), overflowed


@dataclass
class _Quantizer:
    """Fixed qparams for one tensor plus how they were found (what goes into the plan)."""

    bits: int
    symmetric: bool
    granularity: Granularity
    scale: Tensor
    zero_point: Tensor
    ch_axis: int | None
    label: str
    clamped: bool = False

    @property
    def range(self) -> tuple[int, int]:
        return quant_range(self.bits, self.symmetric)

    def __call__(self, x: Tensor) -> Tensor:
        return fake_quantize(x, self.scale, self.zero_point, *self.range, ch_axis=self.ch_axis)

    def tensor_qparams(self) -> TensorQParams:
        qmin, qmax = self.range
        return TensorQParams(
            bits=self.bits,
            symmetric=self.symmetric,
            granularity=self.granularity,
            scale=[float(s) for s in self.scale],
            zero_point=[int(z) for z in self.zero_point],
            quant_min=qmin,
            quant_max=qmax,
            observer=self.label,
            ch_axis=self.ch_axis,
        )


@dataclass
class _LayerData:
    """One layer's calibration inputs, float output and output weights h, samples along dim 0."""

    module: nn.Module
    kind: LayerKind
    inputs: list[Tensor]
    output: Tensor
    h: Tensor


def layer_forward(module: nn.Module, kind: LayerKind, inputs: Sequence[Tensor], weight: Tensor | None) -> Tensor:
    """The op of a quantizable layer on given (possibly fake-quantized) inputs and weight."""
    if kind == "matmul":
        return torch.matmul(inputs[0], inputs[1])
    if kind == "linear":
        return F.linear(inputs[0], weight, module.bias)
    return module._conv_forward(inputs[0], weight, module.bias)


def _out_channel_dim(kind: LayerKind) -> int:
    return 1 if kind == "conv2d" else -1


def _requires_grad(batch: Batch) -> Batch:
    """A copy of the batch whose float tensors require grad, so every layer output joins the graph."""

    def prep(t: Tensor) -> Tensor:
        return t.detach().clone().requires_grad_(True) if t.is_floating_point() else t

    return prep(batch) if isinstance(batch, Tensor) else tuple(prep(t) for t in batch)


@torch.no_grad()
def _execution_groups(model: nn.Module, batch: Batch, names: Sequence[str], config: SearchConfig) -> list[list[str]]:
    """`names` that run, in execution order, cut into consecutive groups whose data fits `max_bytes`."""
    per_sample: dict[str, int] = {}
    first = batch if isinstance(batch, Tensor) else batch[0]

    def make_hook(name: str):
        def hook(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
            numel = sum(t.numel() for t in layer_inputs(module, args)) + 2 * out.numel()  # output and its h
            per_sample[name] = per_sample.get(name, 0) + 4 * numel // first.shape[0]

        return hook

    handles = [model.get_submodule(n).register_forward_hook(make_hook(n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        run_batch(model, batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    groups: list[list[str]] = [[]]
    used = 0
    for name, size in per_sample.items():
        need = size * config.max_samples
        if groups[-1] and used + need > config.max_bytes:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += need
    return [g for g in groups if g]


def _collect_layer_data(
    model: nn.Module, batches: Sequence[Batch], names: Sequence[str], config: SearchConfig
) -> dict[str, _LayerData]:
    """Inputs, outputs and output weights h of `names` on up to `config.max_samples` calibration samples."""
    kinds = quantizable_layers(model)
    generator = torch.Generator().manual_seed(config.seed)
    chunks: dict[str, dict[str, list]] = {n: {"inputs": [], "output": [], "h": []} for n in names}
    live: dict[str, list[Tensor]] = {n: [] for n in names}  # this batch's outputs, still in the graph

    def make_hook(name: str):
        def hook(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
            chunks[name]["inputs"].append([t.detach() for t in layer_inputs(module, args)])
            chunks[name]["output"].append(out.detach())
            live[name].append(out)

        return hook

    handles = [model.get_submodule(n).register_forward_hook(make_hook(n)) for n in names]
    seen = 0
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            if seen >= config.max_samples:
                break
            for outs in live.values():
                outs.clear()
            with torch.enable_grad():
                outputs = _flatten_output(run_batch(model, _requires_grad(batch)))
                flat_live = [t for n in names for t in live[n]]
                squares = [torch.zeros_like(t) for t in flat_live]
                for p in range(config.probes):
                    projection = sum(
                        (o * torch.randn(o.shape, generator=generator)).sum() for o in outputs if o.requires_grad
                    )
                    if not isinstance(projection, Tensor) or not flat_live:
                        raise QuantError("the model output does not depend on its input: nothing to search")
                    grads = torch.autograd.grad(
                        projection, flat_live, retain_graph=p < config.probes - 1, allow_unused=True
                    )
                    for sq, g in zip(squares, grads, strict=True):
                        if g is not None:
                            sq += g.detach().pow(2) / config.probes
            it = iter(squares)
            for n in names:
                chunks[n]["h"].extend(next(it) for _ in live[n])
            first = batch if isinstance(batch, Tensor) else batch[0]
            seen += first.shape[0]
    finally:
        for handle in handles:
            handle.remove()
        live.clear()
        model.train(was_training)

    data = {}
    for n in names:
        c = chunks[n]
        if not c["output"]:
            continue
        h = torch.cat(c["h"])
        if h.sum() == 0:  # the output never reaches the model output: fall back to plain MSE
            h = torch.ones_like(h)
        data[n] = _LayerData(
            module=model.get_submodule(n),
            kind=kinds[n],
            inputs=[torch.cat(parts) for parts in zip(*c["inputs"], strict=True)],
            output=torch.cat(c["output"]),
            h=h / h.mean(),
        )
    return data


class _LayerSearcher:
    """Coordinate descent over one layer's weight quantizer and each input's quantizer."""

    def __init__(self, data: _LayerData, weight_bits: int, act_bits: int, config: SearchConfig) -> None:
        self.d = data
        self.weight_bits, self.act_bits, self.config = weight_bits, act_bits, config
        self.grid = torch.tensor(config.grid, dtype=torch.float32)
        self.w = data.module.weight.detach() if data.kind != "matmul" else None

    def loss(self, out: Tensor, per_channel: bool = False) -> Tensor:
        err = self.d.h * (out - self.d.output).pow(2)
        if not per_channel:
            return err.sum()
        dim = _out_channel_dim(self.d.kind) % err.dim()
        return err.movedim(dim, 0).reshape(err.shape[dim], -1).sum(dim=1)

    def quant_weight(self, wq: _Quantizer | None) -> Tensor | None:
        return self.w if wq is None or self.w is None else wq(self.w)

    def forward(self, weight: Tensor | None, aqs: Sequence[_Quantizer | None]) -> Tensor:
        inputs = [t if q is None else q(t) for t, q in zip(self.d.inputs, aqs, strict=True)]
        return layer_forward(self.d.module, self.d.kind, inputs, weight)

    # --- weights ---

    def weight_minmax(self) -> _Quantizer:
        assert self.w is not None
        amax = self.w.abs().flatten(1).amax(dim=1)
        scale, zp = qparams_from_range(-amax, amax, self.weight_bits, symmetric=True)
        return _Quantizer(self.weight_bits, True, "per_channel", scale, zp, 0, "minmax")

    def search_weight(self, aqs: Sequence[_Quantizer | None]) -> tuple[_Quantizer, float]:
        assert self.w is not None
        inputs = [t if q is None else q(t) for t, q in zip(self.d.inputs, aqs, strict=True)]
        qmax = quant_range(self.weight_bits, symmetric=True)[1]
        best: tuple[_Quantizer, float] | None = None
        for granularity in self.config.weight_granularities:
            per_channel = granularity == "per_channel"
            base = self.w.abs().flatten(1).amax(dim=1) if per_channel else self.w.abs().amax().reshape(1)
            base = (base / qmax).clamp(min=_MIN_SCALE)
            ch_axis = 0 if per_channel else None
            best_loss = torch.full_like(base, float("inf"))
            best_scale = base.clone()
            for a in self.grid:
                scale = (base * a).clamp(min=_MIN_SCALE)
                q = _Quantizer(
                    self.weight_bits,
                    True,
                    granularity,
                    scale,
                    torch.zeros_like(scale, dtype=torch.int64),
                    ch_axis,
                    "hessian",
                )
                loss = self.loss(layer_forward(self.d.module, self.d.kind, inputs, q(self.w)), per_channel)
                better = loss < best_loss
                best_loss = torch.where(better, loss, best_loss)
                best_scale = torch.where(better, scale, best_scale)
            zp = torch.zeros_like(best_scale, dtype=torch.int64)
            candidate = _Quantizer(self.weight_bits, True, granularity, best_scale, zp, ch_axis, "hessian")
            total = float(best_loss.sum())
            if best is None or total < best[1]:
                best = (candidate, total)
        assert best is not None
        return best

    # --- activations ---

    def act_ch_axis(self, x: Tensor, granularity: Granularity) -> int | None:
        if granularity == "per_tensor":
            return None
        return 1 if self.d.kind == "conv2d" else x.dim() - 1

    def act_minmax(self, index: int) -> _Quantizer:
        x = self.d.inputs[index]
        scale, zp = qparams_from_range(x.min().reshape(1), x.max().reshape(1), self.act_bits, symmetric=False)
        return _Quantizer(self.act_bits, False, "per_tensor", scale, zp, None, "minmax")

    def act_candidates(self, x: Tensor, granularity: Granularity) -> Iterable[list[_Quantizer]]:
        """One list of candidates per family (widened/centred asymmetric, symmetric), one per grid point."""
        ch_axis = self.act_ch_axis(x, granularity)
        if ch_axis is None:
            lo, hi = x.min().reshape(1), x.max().reshape(1)
        else:
            flat = x.movedim(ch_axis, 0).reshape(x.shape[ch_axis], -1)
            lo, hi = flat.amin(dim=1), flat.amax(dim=1)
        bits = self.act_bits
        if "asymmetric" in self.config.act_schemes:
            family = []
            for a in self.grid:
                scale, zp = qparams_from_range(lo * a, hi * a, bits, symmetric=False)
                family.append(_Quantizer(bits, False, granularity, scale, zp, ch_axis, "hessian"))
            yield family
            if bool(((lo > 0) | (hi < 0)).any()):  # some range excludes 0: try it unwidened, zero-point guarded
                centre, half = (hi + lo) / 2, (hi - lo) / 2
                family = []
                for a in self.grid:
                    scale, zp, over = guard_zero_point(centre - a * half, centre + a * half, bits)
                    label = "hessian+zp-clamped" if bool(over.any()) else "hessian"
                    family.append(
                        _Quantizer(bits, False, granularity, scale, zp, ch_axis, label, clamped=bool(over.any()))
                    )
                yield family
        if "symmetric" in self.config.act_schemes:
            amax = torch.maximum(lo.abs(), hi.abs())
            family = []
            for a in self.grid:
                scale, zp = qparams_from_range(-amax * a, amax * a, bits, symmetric=True)
                family.append(_Quantizer(bits, True, granularity, scale, zp, ch_axis, "hessian"))
            yield family

    def search_act(self, index: int, wq: _Quantizer | None, aqs: list[_Quantizer | None]) -> tuple[_Quantizer, float]:
        x = self.d.inputs[index]
        weight = self.quant_weight(wq)
        best: tuple[_Quantizer, float] | None = None
        for granularity in self.config.act_granularities:
            if granularity == "per_channel" and self.d.kind == "matmul":
                continue  # a per-channel operand of an activation matmul has no integer kernel at all
            for family in self.act_candidates(x, granularity):
                for q in family:
                    trial = list(aqs)
                    trial[index] = q
                    loss = float(self.loss(self.forward(weight, trial)))
                    if best is None or loss < best[1]:
                        best = (q, loss)
        assert best is not None
        return best

    @torch.no_grad()
    def run(self) -> tuple[_Quantizer | None, list[_Quantizer], float, float]:
        """(weight quantizer, input quantizers, loss, min-max loss), the min-max pair if it scored lower."""
        wq: _Quantizer | None = None
        aqs: list[_Quantizer | None] = [None] * len(self.d.inputs)
        loss = float("inf")
        for _ in range(self.config.rounds):
            if self.w is not None:
                wq, loss = self.search_weight(aqs)
            for i in range(len(aqs)):
                aqs[i], loss = self.search_act(i, wq, aqs)
        mm_w = self.weight_minmax() if self.w is not None else None
        mm_a = [self.act_minmax(i) for i in range(len(aqs))]
        minmax_loss = float(self.loss(self.forward(self.quant_weight(mm_w), mm_a)))
        if minmax_loss <= loss:
            return mm_w, mm_a, minmax_loss, minmax_loss
        return wq, [q for q in aqs if q is not None], loss, minmax_loss


def _search_layer(
    name: str, d: _LayerData, weight_bits: int, act_bits: int, config: SearchConfig, method: str
) -> tuple[LayerQuant, LayerSearch]:
    wq, aqs, loss, minmax_loss = _LayerSearcher(d, weight_bits, act_bits, config).run()
    weight = wq.tensor_qparams() if wq is not None else None
    layer = LayerQuant(
        name=name,
        kind=d.kind,
        method=method,
        weight=weight,
        inputs=[q.tensor_qparams() for q in aqs],
        weight_shape=list(d.module.weight.shape) if weight is not None else [],
    )
    report = LayerSearch(
        name=name,
        kind=d.kind,
        loss=loss,
        minmax_loss=minmax_loss,
        weight_granularity=wq.granularity if wq is not None else None,
        act_choices=[f"{q.granularity},{'symmetric' if q.symmetric else 'asymmetric'},{q.label}" for q in aqs],
        zero_point_clamped=any(q.clamped for q in aqs),
    )
    return layer, report


def hessian_search(
    model: nn.Module,
    batches: Iterable[Batch],
    weight_bits: int = 8,
    act_bits: int = 8,
    *,
    config: SearchConfig | None = None,
    method: str = "qhyvit",
    min_batches: int = 1,
    progress: bool = True,
) -> SearchResult:
    """A plan for every quantizable layer of `model` with output-aware scales, granularity and scheme.

    The weights are left untouched: the plan's weight scales are the grid rounding-to-nearest will use,
    and the grid a learned rounding (`quant.reconstruction`) rounds onto.
    """
    config = config or SearchConfig()
    batches = materialize_batches(batches, min_batches, "scale search")
    names = list(quantizable_layers(model))
    groups = _execution_groups(model, batches[0], names, config)
    layers: dict[str, LayerQuant] = {}
    report: dict[str, LayerSearch] = {}
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("scale search", total=sum(len(g) for g in groups))
        for group in groups:
            data = _collect_layer_data(model, batches, group, config)
            for name, d in data.items():
                layers[name], report[name] = _search_layer(name, d, weight_bits, act_bits, config, method)
                bar.advance(task)
    metadata = {
        "calibration_batches": len(batches),
        "observer": "hessian",
        "weight_observer": "hessian",
        "not_executed": [n for n in names if n not in layers],
        "search": {
            "grid": [min(config.grid), max(config.grid), len(config.grid)],
            "rounds": config.rounds,
            "max_samples": config.max_samples,
            "zero_points_clamped": sum(r.zero_point_clamped for r in report.values()),
            "minmax_kept": sum(r.loss == r.minmax_loss for r in report.values()),
        },
    }
    return SearchResult(plan=QuantPlan(layers=layers, metadata=metadata), layers=report)
