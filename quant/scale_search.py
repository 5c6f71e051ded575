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
- output grids, for the convs `quant.layer_ops.quantizes_output` names (what calibration gives them too): with the
  weight and inputs chosen, the output's grid is searched on the same families and grid, scored by the same loss on
  the output the integer conv writes (rounded, bias on the int32 accumulator grid), min-max kept if better. Without
  one, onnxruntime cannot fuse the conv into QLinearConv and the plan's convs stay float kernels in the artifact.

Log2 quantizers for post-softmax/post-GELU values are not offered: a plan entry is uniform integer qparams
(that is what XNNPACK, ORT QDQ and Core ML run), and softmax outputs are never a quantized input here.

Where the parts live: `quant.output_hessian` collects each layer's inputs, output and h; `quant.layer_search`
holds the candidates and one layer's descent; this module runs them over the model and writes the plan.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from rich.progress import Progress
from torch import nn

from quant.fake_quant import Batch, accumulator_bias, materialize_batches, quantizable_layers
from quant.layer_ops import layer_forward, quantizes_output
from quant.layer_search import LayerSearcher, SearchConfig, TensorQuantizer
from quant.output_hessian import LayerData, collect_layer_data, execution_groups
from quant.plan import Granularity, LayerKind, LayerQuant, QuantPlan


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
    output_choice: str | None = None

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


def _search_layer(
    name: str, d: LayerData, weight_bits: int, act_bits: int, config: SearchConfig, method: str
) -> tuple[LayerQuant, LayerSearch]:
    searcher = LayerSearcher(d, weight_bits, act_bits, config)
    wq, aqs, loss, minmax_loss = searcher.run()
    weight = wq.tensor_qparams() if wq is not None else None
    layer = LayerQuant(
        name=name,
        kind=d.kind,
        method=method,
        weight=weight,
        inputs=[q.tensor_qparams() for q in aqs],
        weight_shape=list(d.module.weight.shape) if weight is not None else [],
    )
    oq = _search_output(searcher, layer, wq, aqs) if quantizes_output(d.module) else None
    if oq is not None:
        layer.output = oq.tensor_qparams()
    report = LayerSearch(
        name=name,
        kind=d.kind,
        loss=loss,
        minmax_loss=minmax_loss,
        weight_granularity=wq.granularity if wq is not None else None,
        act_choices=[f"{q.granularity},{'symmetric' if q.symmetric else 'asymmetric'},{q.label}" for q in aqs],
        zero_point_clamped=any(q.clamped for q in aqs) or (oq is not None and oq.clamped),
        output_choice=None if oq is None else f"{'symmetric' if oq.symmetric else 'asymmetric'},{oq.label}",
    )
    return layer, report


@torch.no_grad()
def _search_output(
    searcher: LayerSearcher, layer: LayerQuant, wq: TensorQuantizer | None, aqs: list[TensorQuantizer]
) -> TensorQuantizer:
    """The per-tensor output grid (the only one QLinearConv takes) for the chosen weight and input grids."""
    d = searcher.d
    bias = accumulator_bias(d.module, layer)
    out = layer_forward(
        d.module, d.kind, [q(t) for q, t in zip(aqs, d.inputs, strict=True)], searcher.quant_weight(wq), bias
    )
    best = searcher.minmax_of(d.output)
    best_loss = float(searcher.loss(best(out)))
    for family in searcher.act_candidates(d.output, "per_tensor"):
        for q in family:
            loss = float(searcher.loss(q(out)))
            if loss < best_loss:
                best, best_loss = q, loss
    return best


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
    groups = execution_groups(model, batches[0], names, max_samples=config.max_samples, max_bytes=config.max_bytes)
    layers: dict[str, LayerQuant] = {}
    report: dict[str, LayerSearch] = {}
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("scale search", total=sum(len(g) for g in groups))
        for group in groups:
            data = collect_layer_data(
                model, batches, group, max_samples=config.max_samples, probes=config.probes, seed=config.seed
            )
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
            "output_grids": sum(layer.output is not None for layer in layers.values()),
        },
    }
    return SearchResult(plan=QuantPlan(layers=layers, metadata=metadata), layers=report)
