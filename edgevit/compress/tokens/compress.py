"""`compress_tokens(module, settings, inputs)`: install token compression in a module, in place, at the keep
ratio asked for or the one that removes the FLOPs asked for (FLOPs measured with `torch.utils.flop_counter` on
the module's own inputs, so the budget holds for what really runs, compression overhead included)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from edgevit.compress.tokens import matrices
from edgevit.compress.tokens.sites import Site, install

MIN_KEEP = 0.5  # the lowest keep ratio: ToMe cannot merge more than half the tokens of a block
SEARCH_STEPS = 12  # bisection steps on the keep ratio: 2^-12 is finer than one token at every count


class TokenBudgetError(ValueError):
    """A FLOPs reduction no keep ratio reaches from the given start block (the message says what would)."""


@dataclass(frozen=True)
class TokenSettings:
    """What to compress: `method` (transform, topk, tome), and either `flops` (the fraction of FLOPs to remove)
    or `keep` (the fraction of tokens each compressing block keeps); compression starts at block `start`;
    `tau` is the transform's softmax temperature."""

    method: str = "transform"
    flops: float | None = None
    keep: float | None = None
    start: int = 0
    tau: float = matrices.DEFAULT_TAU


@dataclass
class TokenReport:
    method: str
    keep: float
    flops_before: int
    flops_after: int
    tokens: dict[str, list[int]]  # per site: patch tokens leaving each block

    @property
    def reduction(self) -> float:
        return 1.0 - self.flops_after / self.flops_before


def count_flops(module: nn.Module, inputs: Sequence[Tensor]) -> int:
    """Matmul/conv FLOPs of one call (torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return int(counter.get_total_flops())


def compress_tokens(module: nn.Module, settings: TokenSettings, inputs: Sequence[Tensor]) -> TokenReport:
    """Compress `module`'s tokens in place; `inputs` fix its shapes (one example call). Raises ValueError when the
    module has nothing to compress and `TokenBudgetError` when the FLOPs asked for cannot be removed."""
    if (settings.flops is None) == (settings.keep is None):
        raise ValueError("give exactly one of flops (fraction of FLOPs removed) or keep (fraction of tokens kept)")
    before = count_flops(module, inputs)
    sites = install(module, settings.method, settings.tau, settings.start)
    if not sites:
        raise ValueError("no transformer blocks whose tokens can be compressed (ViT blocks or EfficientTAM's trunk)")
    keep = settings.keep if settings.keep is not None else _keep_for(module, sites, inputs, before, settings.flops)
    _set_keep(sites, keep)
    after = count_flops(module, inputs)
    return TokenReport(settings.method, keep, before, after, {s.name: s.counts() for s in sites})


def _set_keep(sites: list[Site], keep: float) -> None:
    for site in sites:
        site.set_keep(keep)


def _keep_for(module: nn.Module, sites: list[Site], inputs: Sequence[Tensor], before: int, target: float) -> float:
    """The largest keep ratio whose measured FLOPs reduction reaches `target` (FLOPs fall as keep falls)."""

    def reduction(keep: float) -> float:
        _set_keep(sites, keep)
        return 1.0 - count_flops(module, inputs) / before

    most = reduction(MIN_KEEP)
    if most < target:
        raise TokenBudgetError(f"at most {most:.0%} of the FLOPs can be removed from this start block")
    lo, hi = MIN_KEEP, 1.0  # reduction(lo) >= target
    for _ in range(SEARCH_STEPS):
        mid = (lo + hi) / 2
        if reduction(mid) >= target:
            lo = mid
        else:
            hi = mid
    return lo
