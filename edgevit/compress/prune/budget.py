"""What removing each head or MLP channel saves (parameters or FLOPs), and which units to remove.

Ranking is global with per-layer normalisation: each layer's scores (one block's heads, or its channels) are
rescaled so they sum to the layer's prunable cost, and units are removed in order of importance per cost.
That makes a unit's key its score over its layer's mean score, so the heads and channels of every block compete
on how much they matter to their own layer, whatever scale the score has there (`normalize="none"` ranks the raw
score per cost instead, for scores comparable across layers: the default for taylor). Every block keeps at least
`min_heads` heads and `min_channels` channels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from edgevit.compress.prune.blocks import BlockAdapter
from edgevit.compress.prune.measure import Batch

NORMALIZE = ("mean", "none")


@dataclass(frozen=True)
class UnitCost:
    """What one head and one MLP channel of a block cost, in the budget's currency."""

    head: float
    channel: float


def param_costs(blocks: Sequence[BlockAdapter]) -> list[UnitCost]:
    costs = []
    for b in blocks:
        hd = b.head_dim
        head = 3 * hd * b.qkv.in_features + (3 * hd if b.qkv.bias is not None else 0) + b.proj.out_features * hd
        channel = b.fc1.in_features + (1 if b.fc1.bias is not None else 0) + b.fc2.out_features
        costs.append(UnitCost(float(head), float(channel)))
    return costs


@torch.no_grad()
def flop_costs(module: nn.Module, blocks: Sequence[BlockAdapter], batch: Batch) -> list[UnitCost]:
    """FLOPs one head and one channel take in a call on `batch`, from the token counts each block sees (a
    windowed block attends within windows: its sequence is the window, its tokens include the padding)."""
    seen: dict[int, tuple[int, int, int]] = {}

    def on_proj(i: int):
        def hook(_: nn.Module, args: tuple) -> None:
            x = args[0]
            tokens, seq = x.numel() // x.shape[-1], math.prod(x.shape[1:-1])
            seen[i] = (tokens, seq, seen.get(i, (0, 0, 0))[2])

        return hook

    def on_fc2(i: int):
        def hook(_: nn.Module, args: tuple) -> None:
            x = args[0]
            tokens, seq, _ = seen.get(i, (0, 0, 0))
            seen[i] = (tokens, seq, x.numel() // x.shape[-1])

        return hook

    handles = [b.proj.register_forward_pre_hook(on_proj(i)) for i, b in enumerate(blocks)]
    handles += [b.fc2.register_forward_pre_hook(on_fc2(i)) for i, b in enumerate(blocks)]
    try:
        module(*batch)
    finally:
        for handle in handles:
            handle.remove()
    costs = []
    for i, b in enumerate(blocks):
        tokens, seq, mlp_tokens = seen.get(i, (0, 0, 0))
        hd = b.head_dim
        linear = 2 * tokens * hd * (3 * b.qkv.in_features + b.proj.out_features)
        attention = 4 * tokens * seq * hd  # q·kᵀ and softmax·v
        channel = 2 * mlp_tokens * (b.fc1.in_features + b.fc2.out_features)
        costs.append(UnitCost(float(linear + attention), float(channel)))
    return costs


def min_channels(hidden: int, fraction: float) -> int:
    return max(1, math.ceil(hidden * fraction))


def removable(blocks: Sequence[BlockAdapter], costs: Sequence[UnitCost], min_heads: int, fraction: float) -> float:
    """The most the blocks can lose while each keeps `min_heads` heads and its share of channels."""
    return sum(
        max(0, b.num_heads - min_heads) * c.head + (b.hidden - min_channels(b.hidden, fraction)) * c.channel
        for b, c in zip(blocks, costs, strict=True)
    )


def select(
    blocks: Sequence[BlockAdapter],
    scores: Sequence[tuple[Tensor, Tensor]],
    costs: Sequence[UnitCost],
    target: float,
    min_heads: int,
    fraction: float,
    normalize: str = "mean",
) -> list[tuple[list[int], list[int]]]:
    """The heads and channels each block keeps so that at least `target` cost is removed (least important
    first, by the module docstring's key); the caller checked that `target` is reachable."""
    ranked = []
    for i, ((heads, channels), cost) in enumerate(zip(scores, costs, strict=True)):
        for kind, values, unit in (("head", heads, cost.head), ("channel", channels, cost.channel)):
            values = values.double()
            if normalize == "mean":
                values = values / values.mean().clamp_min(1e-30)
            else:
                values = values / max(unit, 1e-30)
            ranked += [(float(v), i, kind, j) for j, v in enumerate(values.tolist())]
    ranked.sort(key=lambda item: item[0])
    gone = [({"head": set(), "channel": set()}) for _ in blocks]
    removed = 0.0
    for _, i, kind, j in ranked:
        if removed >= target:
            break
        b = blocks[i]
        floor = min_heads if kind == "head" else min_channels(b.hidden, fraction)
        total = b.num_heads if kind == "head" else b.hidden
        if total - len(gone[i][kind]) <= floor:
            continue
        gone[i][kind].add(j)
        removed += costs[i].head if kind == "head" else costs[i].channel
    return [
        (
            [h for h in range(b.num_heads) if h not in g["head"]],
            [c for c in range(b.hidden) if c not in g["channel"]],
        )
        for b, g in zip(blocks, gone, strict=True)
    ]
