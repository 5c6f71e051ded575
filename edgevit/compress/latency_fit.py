"""The latency search's cost model and floor, as arithmetic on measured numbers (`edgevit.compress.bitsearch`
measures them).

One-layer probes benched alone mispredict the unit they sit in (DINOv2-S on XNNPACK: the probes said all-W4 adds
11 ms to W8A8's 157, the unit measured 190), and not in proportion to their own time — on the tiny ViT fc1 at 4 bits
added 0.076 ms in the unit where its probe said −0.002 — so a per-width scale and offset cannot correct them.
Whole-unit anchor plans, benched beside the probes, correct each probe key by the least change that reproduces them
(`fit_costs`); the floor (`floor_reason`) keeps W8A8 wherever narrower widths buy no measured time, and wherever
a plan that keeps layers float measures over its budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

TOP_WEIGHT = 1e3  # how much more the first anchor (the highest widths) weighs in the fit


@dataclasses.dataclass(frozen=True)
class Anchor:
    """A whole-unit plan benched beside the probes: how many layers sit at each probe key, and its median ms."""

    name: str
    counts: dict[str, int]
    measured_ms: float


def fit_costs(isolated: Mapping[str, float], anchors: Sequence[Anchor]) -> tuple[dict[str, float], float]:
    """In-context ms per probe key and the fixed ms: the least change to the isolated probe costs that makes
    `fixed + Σ count·cost` reproduce every anchor's measured ms (least squares where the anchors disagree).

    The unknowns start at the isolated costs, and the fixed part where the first anchor (the highest widths)
    holds; that anchor is weighted `TOP_WEIGHT` times the others, so the floor's reference stays where it was
    measured while the rest share what they disagree on. The change minimised is per layer — a key held by n
    layers weighs n — so one anchor that moves every layer to 4 bits corrects each 4-bit layer by the same ms (a
    per-width offset), while a group-flip anchor (one group of identical layers moved) sets that group's
    in-context change exactly. With the first anchor alone it
    is the bare probes plus the rest of the unit as a fixed part. Pure arithmetic on given numbers."""
    keys = sorted(isolated)
    weight = np.array([1.0] + [float(max([1] + [a.counts.get(k, 0) for a in anchors])) for k in keys])
    rows = np.array([[1.0] + [float(a.counts.get(k, 0)) for k in keys] for a in anchors])
    measured = np.array([a.measured_ms for a in anchors])
    fixed = anchors[0].measured_ms - sum(n * isolated[k] for k, n in anchors[0].counts.items())
    start = np.array([fixed] + [isolated[k] for k in keys])
    held = np.array([[TOP_WEIGHT]] + [[1.0]] * (len(anchors) - 1))  # the first anchor held (nearly) exactly
    step, *_ = np.linalg.lstsq(held * rows / np.sqrt(weight), held[:, 0] * (measured - rows @ start), rcond=None)
    fitted = start + step / np.sqrt(weight)
    return {k: float(v) for k, v in zip(keys, fitted[1:], strict=True)}, float(fitted[0])


def floor_reason(searched_ms: float | None, top_ms: float, budget_ms: float, floats: int = 0) -> str | None:
    """Why the highest-width plan (W8A8) is taken instead of the searched one, or None to keep the search's plan.

    Without float layers it is taken when it meets the budget itself (nothing narrower is needed, and it loses the
    least SQNR), or when the searched plan (`searched_ms`, benched beside it) is not faster: narrower widths that
    buy no time only lose SQNR. A searched plan that keeps `floats` layers float is meant to be slower than W8A8
    (it spends the budget's room on SQNR), so it is kept unless it measured over the budget while W8A8 is within
    it or no slower."""
    if floats:
        if searched_ms is None or searched_ms <= budget_ms or top_ms > searched_ms > budget_ms:
            return None
        return (
            f"the searched plan keeps {floats} layer(s) float and measured {searched_ms:.4g} ms, over the "
            f"{budget_ms:.4g} ms budget, and the highest widths {top_ms:.4g} ms benched beside it"
        )
    if top_ms <= budget_ms:
        return f"the highest widths measure {top_ms:.4g} ms, within the {budget_ms:.4g} ms budget: none narrower needed"
    if searched_ms is not None and searched_ms >= top_ms:
        return (
            f"the searched plan measured {searched_ms:.4g} ms, no faster than the highest widths' {top_ms:.4g} ms "
            "benched beside it: the highest widths lose less SQNR"
        )
    return None
