"""What the scale search looks at per layer: calibration inputs, float output and output weights h.

h = diag(JᵀJ) per element of a layer's output O, J the Jacobian of the model output w.r.t. O, estimated
without labels by random projections (`quant.scale_search` says why): one backward pass of ⟨model(x), r⟩,
r ~ N(0, I), per calibration batch gives g = Jᵀr with E[g²] = diag(JᵀJ) for every layer at once. Layers are
collected in groups whose data fits a memory bound, so a big model is searched a group at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from quant.errors import QuantError
from quant.fake_quant import Batch, quantizable_layers, run_batch
from quant.layer_ops import layer_inputs
from quant.metrics import flatten_output
from quant.plan import LayerKind


@dataclass
class LayerData:
    """One layer's calibration inputs, float output and output weights h, samples along dim 0."""

    module: nn.Module
    kind: LayerKind
    inputs: list[Tensor]
    output: Tensor
    h: Tensor


def _requires_grad(batch: Batch) -> Batch:
    """A copy of the batch whose float tensors require grad, so every layer output joins the graph."""

    def prep(t: Tensor) -> Tensor:
        return t.detach().clone().requires_grad_(True) if t.is_floating_point() else t

    return prep(batch) if isinstance(batch, Tensor) else tuple(prep(t) for t in batch)


@torch.no_grad()
def execution_groups(
    model: nn.Module, batch: Batch, names: Sequence[str], *, max_samples: int, max_bytes: int
) -> list[list[str]]:
    """`names` that run, in execution order, cut into consecutive groups whose data fits `max_bytes`.

    A layer's data is its inputs, output and h on `max_samples` samples, sized from one batch.
    """
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
        need = size * max_samples
        if groups[-1] and used + need > max_bytes:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += need
    return [g for g in groups if g]


def collect_layer_data(
    model: nn.Module, batches: Sequence[Batch], names: Sequence[str], *, max_samples: int, probes: int, seed: int
) -> dict[str, LayerData]:
    """Inputs, outputs and output weights h of `names` on up to `max_samples` calibration samples.

    h is averaged over `probes` random projections per batch, drawn from a generator seeded with `seed`.
    """
    kinds = quantizable_layers(model)
    generator = torch.Generator().manual_seed(seed)
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
            if seen >= max_samples:
                break
            for outs in live.values():
                outs.clear()
            with torch.enable_grad():
                outputs = flatten_output(run_batch(model, _requires_grad(batch)))
                flat_live = [t for n in names for t in live[n]]
                squares = [torch.zeros_like(t) for t in flat_live]
                for p in range(probes):
                    projection = sum(
                        (o * torch.randn(o.shape, generator=generator)).sum() for o in outputs if o.requires_grad
                    )
                    if not isinstance(projection, Tensor) or not flat_live:
                        raise QuantError("the model output does not depend on its input: nothing to search")
                    grads = torch.autograd.grad(projection, flat_live, retain_graph=p < probes - 1, allow_unused=True)
                    for sq, g in zip(squares, grads, strict=True):
                        if g is not None:
                            sq += g.detach().pow(2) / probes
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
        data[n] = LayerData(
            module=model.get_submodule(n),
            kind=kinds[n],
            inputs=[torch.cat(parts) for parts in zip(*c["inputs"], strict=True)],
            output=torch.cat(c["output"]),
            h=h / h.mean(),
        )
    return data
