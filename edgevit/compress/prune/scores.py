"""Importance of every head and MLP channel of each block: magnitude, first-order Taylor, or activation.

- magnitude: the L2 norm of a unit's weights (its qkv rows and proj columns; its fc1 row and fc2 column),
  the data-free baseline.
- activation: the energy a unit writes into the residual stream on the calibration inputs,
  Σ_tokens ||γ ⊙ W_out[:, unit] · a_unit||² (γ: LayerScale where the block has one), i.e. how much output
  disappears when the unit is removed, measured rather than guessed from weights.
- taylor: first-order Taylor |Σ w·∂L/∂w| over the unit's output weights (proj columns, fc2 column), which is
  exactly the loss change of gating the unit off. At the unpruned model the distillation loss is at its
  minimum and its gradient is zero, so the loss is probed with random output directions z (Gauss-Newton):
  s(z) = Σ w·∂⟨f, z⟩/∂w and t(z) the same with z replaced by H z, H the loss's Hessian in output space;
  E[s·t] = JᵀHJ, the second-order loss increase the removal causes. For the default relative MSE, H is a
  constant per output, so probes drawn with that covariance need one backward each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from edgevit.compress.prune.blocks import BlockAdapter
from edgevit.compress.prune.measure import Batch, as_tuple

Scores = list[tuple[Tensor, Tensor]]  # per block: (head scores [num_heads], channel scores [hidden])
Loss = Callable[[Tensor | tuple[Tensor, ...], Tensor | tuple[Tensor, ...]], Tensor]


def magnitude(blocks: Sequence[BlockAdapter]) -> Scores:
    found = []
    for b in blocks:
        heads, hd = b.num_heads, b.head_dim
        qkv = b.qkv.weight.detach().reshape(3, heads, hd, -1).pow(2).sum(dim=(0, 2, 3))
        proj = b.proj.weight.detach().reshape(-1, heads, hd).pow(2).sum(dim=(0, 2))
        channels = b.fc1.weight.detach().pow(2).sum(1) + b.fc2.weight.detach().pow(2).sum(0)
        found.append(((qkv + proj).sqrt(), channels.sqrt()))
    return found


def _out_weight(linear: nn.Linear, scale: Tensor | None) -> Tensor:
    weight = linear.weight.detach()
    return weight if scale is None else weight * scale.reshape(-1, 1)


@torch.no_grad()
def activation(module: nn.Module, blocks: Sequence[BlockAdapter], inputs: Sequence[Batch]) -> Scores:
    found = _zeros(blocks)

    def on_proj(i: int, b: BlockAdapter) -> Callable:
        weight = _out_weight(b.proj, b.attn_scale).reshape(-1, b.num_heads, b.head_dim)

        def hook(_: nn.Module, args: tuple) -> None:
            x = args[0].detach().reshape(-1, b.num_heads, b.head_dim)
            found[i][0].add_(torch.einsum("thd,ohd->tho", x, weight).pow(2).sum(dim=(0, 2)).double())

        return hook

    def on_fc2(i: int, b: BlockAdapter) -> Callable:
        column = _out_weight(b.fc2, b.mlp_scale).pow(2).sum(0)

        def hook(_: nn.Module, args: tuple) -> None:
            x = args[0].detach().reshape(-1, b.hidden)
            found[i][1].add_((x.pow(2).sum(0) * column).double())

        return hook

    handles = [b.proj.register_forward_pre_hook(on_proj(i, b)) for i, b in enumerate(blocks)]
    handles += [b.fc2.register_forward_pre_hook(on_fc2(i, b)) for i, b in enumerate(blocks)]
    try:
        for batch in inputs:
            module(*batch)
    finally:
        for handle in handles:
            handle.remove()
    return [(h.float(), c.float()) for h, c in found]


def taylor(
    module: nn.Module,
    blocks: Sequence[BlockAdapter],
    inputs: Sequence[Batch],
    loss: Loss | None,
    probes: int,
    seed: int,
) -> Scores:
    generator = torch.Generator().manual_seed(seed)
    weights = [w for b in blocks for w in (b.proj.weight, b.fc2.weight)]
    found = _zeros(blocks)
    flags = [w.requires_grad for w in weights]
    for w in weights:
        w.requires_grad_(True)
    try:
        for batch in inputs:
            with torch.enable_grad():
                raw = module(*batch)
                outs = as_tuple(raw)
                curvature = _curvature(raw, loss)
                # relative MSE's Hessian is 2/Σr² per output: probes drawn with that covariance give s = t
                scales = [(2.0 / o.detach().pow(2).sum().clamp_min(1e-30)).sqrt() for o in outs]
                for _ in range(probes):
                    z = [torch.randn(o.shape, generator=generator, dtype=o.dtype) for o in outs]
                    if curvature is None:
                        z = [zi * scale for zi, scale in zip(z, scales, strict=True)]
                    s = _unit_sums(blocks, torch.autograd.grad(outs, weights, z, retain_graph=True))
                    t = (
                        s
                        if curvature is None
                        else _unit_sums(blocks, torch.autograd.grad(outs, weights, curvature(z), retain_graph=True))
                    )
                    for acc, si, ti in zip(found, s, t, strict=True):
                        acc[0].add_((si[0] * ti[0]).double())
                        acc[1].add_((si[1] * ti[1]).double())
    finally:
        for w, flag in zip(weights, flags, strict=True):
            w.requires_grad_(flag)
    return [(h.clamp_min(0).float(), c.clamp_min(0).float()) for h, c in found]


def _zeros(blocks: Sequence[BlockAdapter]) -> list[tuple[Tensor, Tensor]]:
    return [(torch.zeros(b.num_heads, dtype=torch.float64), torch.zeros(b.hidden, dtype=torch.float64)) for b in blocks]


def _unit_sums(blocks: Sequence[BlockAdapter], grads: Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """Σ w·g over each head's proj columns and each channel's fc2 column."""
    sums = []
    for i, b in enumerate(blocks):
        gp, gf = grads[2 * i], grads[2 * i + 1]
        heads = (b.proj.weight.detach() * gp).reshape(-1, b.num_heads, b.head_dim).sum(dim=(0, 2))
        sums.append((heads, (b.fc2.weight.detach() * gf).sum(0)))
    return sums


def _curvature(raw: Tensor | tuple, loss: Loss | None) -> Callable[[list[Tensor]], list[Tensor]] | None:
    """z ↦ H z, the loss's Hessian in output space at the unpruned outputs; None for the default loss, whose
    Hessian is a multiple of the identity per output (folded into the probes instead)."""
    if loss is None:
        return None
    ref = [o.detach() for o in as_tuple(raw)]
    probe = [o.clone().requires_grad_(True) for o in ref]
    value = loss(probe[0] if isinstance(raw, Tensor) else tuple(probe), raw_like(raw, ref))
    grads = torch.autograd.grad(value, probe, create_graph=True, allow_unused=True)
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]

    def apply(z: list[Tensor]) -> list[Tensor]:
        if not live:
            return [torch.zeros_like(zi) for zi in z]
        hz = torch.autograd.grad(
            [grads[i] for i in live], probe, [z[i] for i in live], retain_graph=True, allow_unused=True
        )
        return [torch.zeros_like(zi) if h is None else h.detach() for zi, h in zip(z, hz, strict=True)]

    return apply


def raw_like(raw: Tensor | tuple, tensors: Sequence[Tensor]) -> Tensor | tuple[Tensor, ...]:
    """`tensors` shaped as the module returned them: one tensor, or a tuple."""
    return tensors[0] if isinstance(raw, Tensor) else tuple(tensors)
