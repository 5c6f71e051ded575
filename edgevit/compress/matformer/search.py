"""Mix'n'Match: choose one MLP granularity per block under a budget, scored on held-out labelled images.

A trained MatViT holds g^L sub-models (g granularities, L blocks), most never trained as such. MatFormer's
finding is that the best of them change granularity slowly across layers: non-decreasing from the first block
to the last, with small steps, beat mixes that jump around. The search here uses that as its candidate set and
adds one data-driven path, then measures every candidate:
1. the paper's heuristic: every non-decreasing choice that fits the budget and that no other fitting
   non-decreasing choice contains (each block at least as wide); the `max_candidates` most costly of those;
2. a greedy walk over layers: from every block at the smallest width, repeatedly widen the one block whose next
   width buys the largest drop in held-out loss per unit of cost, while the budget allows;
3. each candidate's held-out cross-entropy (the accuracy proxy: smoother than top-1 on a few hundred images)
   and accuracy; the lowest loss wins, the cheaper on a tie.
Cost is whatever the caller measures: parameters (exact, `MatViT.parameter_count`) or a latency model.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from edgevit.data.labelled import Labelled
from edgevit.errors import EdgevitError
from edgevit.models.matvit import MatViT

Levels = tuple[int, ...]


@dataclass(frozen=True)
class Candidate:
    """One per-block choice of granularity indices, its cost, and how it scored on the held-out images."""

    levels: Levels
    cost: float
    loss: float
    accuracy: float
    origin: str  # "monotone" (the paper's heuristic), "greedy", or both joined by "+"

    def to_dict(self) -> dict[str, object]:
        return {"levels": list(self.levels), "cost": self.cost, "loss": self.loss, "accuracy": self.accuracy,
                "origin": self.origin}  # fmt: skip


def monotone_choices(depth: int, count: int) -> list[Levels]:
    """Every non-decreasing choice of `count` granularities over `depth` blocks (the paper's Mix'n'Match space)."""
    return list(itertools.combinations_with_replacement(range(count), depth))


def maximal(choices: Sequence[Levels]) -> list[Levels]:
    """The choices no other choice contains (at least as wide in every block, wider in one)."""

    def contains(a: Levels, b: Levels) -> bool:
        return a != b and all(x >= y for x, y in zip(a, b, strict=True))

    return [c for c in choices if not any(contains(o, c) for o in choices)]


@torch.no_grad()
def score(model: MatViT, levels: Levels, held_out: Labelled, batch: int = 256) -> tuple[float, float]:
    """(cross-entropy, accuracy) of the sub-model `levels` on held-out labelled images."""
    model.set_granularity(list(levels))
    model.eval()
    logits = torch.cat([model(held_out.images[i : i + batch]) for i in range(0, len(held_out), batch)])
    loss = F.cross_entropy(logits, held_out.labels).item()
    return loss, (logits.argmax(-1) == held_out.labels).float().mean().item()


def mix_n_match(
    model: MatViT,
    budget: float,
    cost: Callable[[Levels], float],
    held_out: Labelled,
    *,
    max_candidates: int = 12,
    describe: Callable[[float], str] = str,
) -> list[Candidate]:
    """Every candidate measured, best first (lowest held-out loss, then lowest cost); the model's granularity is
    restored after. Raises when not even the smallest sub-model fits (`describe` words a cost for the message)."""
    depth, count = model.cfg.depth, len(model.cfg.granularities)
    smallest = (0,) * depth
    if cost(smallest) > budget:
        raise EdgevitError(
            f"a budget of {describe(budget)} is below the smallest sub-model (every MLP at "
            f"{model.cfg.granularities[0]:g} width: {describe(cost(smallest))}); raise it to at least that"
        )
    before = model.granularity
    scores: dict[Levels, tuple[float, float]] = {}

    def measured(levels: Levels) -> tuple[float, float]:
        if levels not in scores:
            scores[levels] = score(model, levels, held_out)
        return scores[levels]

    try:
        fitting = [c for c in monotone_choices(depth, count) if cost(c) <= budget]
        heuristic = sorted(maximal(fitting), key=cost, reverse=True)[:max_candidates]
        greedy = _greedy(depth, count, budget, cost, measured)
        origins: dict[Levels, list[str]] = {}
        for levels, origin in [*((c, "monotone") for c in heuristic), (greedy, "greedy")]:
            origins.setdefault(levels, []).append(origin)
        found = [Candidate(lv, cost(lv), *measured(lv), "+".join(o)) for lv, o in origins.items()]
    finally:
        model.set_granularity(before)
    return sorted(found, key=lambda c: (c.loss, c.cost))


def _greedy(
    depth: int, count: int, budget: float, cost: Callable[[Levels], float], measured: Callable[[Levels], tuple]
) -> Levels:
    """Widen one block at a time, the one with the best held-out loss drop per unit of cost, while it fits."""
    current = (0,) * depth
    while True:
        base_loss, base_cost = measured(current)[0], cost(current)
        steps = []
        for i in range(depth):
            if current[i] + 1 < count:
                up = current[:i] + (current[i] + 1,) + current[i + 1 :]
                if cost(up) <= budget:
                    gain = (base_loss - measured(up)[0]) / max(cost(up) - base_cost, 1e-12)
                    steps.append((gain, i, up))  # ties go to the later block (the paper widens late layers)
        if not steps:
            return current
        current = max(steps)[2]
