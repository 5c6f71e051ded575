"""Wall-clock timing of callables, alone or side by side, with the thread count set and recorded.

On a machine shared with other jobs the load drifts by the minute, so two paths timed one after the other
can differ by the drift rather than by their speed. `interleaved` therefore times its peers round-robin —
one call of each per round, the starting peer rotating every round — so a burst of load lands on all of
them alike, and their medians and ratios stay comparable even when the absolute figures are noisy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Stats:
    """Summary of one callable's run times, in seconds; `samples` keeps the raw times in call order."""

    median: float
    p10: float
    p90: float
    mean: float
    n: int
    samples: tuple[float, ...]

    @classmethod
    def of(cls, samples: list[float] | tuple[float, ...]) -> Stats:
        if not samples:
            raise ValueError("no samples to summarise")
        p10, median, p90 = (float(v) for v in np.percentile(samples, [10, 50, 90]))
        return cls(median, p10, p90, float(np.mean(samples)), len(samples), tuple(samples))

    def to_dict(self) -> dict[str, Any]:
        """Milliseconds, the unit every report table uses."""
        return {
            "median_ms": _ms(self.median),
            "p10_ms": _ms(self.p10),
            "p90_ms": _ms(self.p90),
            "mean_ms": _ms(self.mean),
            "n": self.n,
            "samples_ms": [_ms(s) for s in self.samples],
        }


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


def set_threads(threads: int) -> dict[str, int]:
    """Pin PyTorch's intra-op pool to `threads` and return what it now reports, for the results file.

    Runtimes (onnxruntime, LiteRT, ExecuTorch) take their own count when a runner is loaded; a suite passes
    the same number there, so every peer gets the same cores.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return {
        "requested": threads,
        "torch_intra_op": torch.get_num_threads(),
        "torch_inter_op": torch.get_num_interop_threads(),
    }


def time_callable(fn: Callable[[], Any], warmup: int = 3, runs: int = 20) -> Stats:
    """Call `fn` `warmup` times untimed (first-call allocation, lazy init, caches), then time `runs` calls."""
    return interleaved({"fn": fn}, warmup=warmup, runs=runs)["fn"]


def interleaved(
    fns: Mapping[str, Callable[[], Any]],
    warmup: int = 3,
    runs: int = 20,
    on_round: Callable[[int], None] | None = None,
) -> dict[str, Stats]:
    """Time several callables side by side: `runs` rounds, one call of each per round.

    The order within a round rotates (round r starts with peer r mod k), so no peer always runs right after
    the same other one — a peer that leaves caches cold or a thread pool spinning would otherwise tax one
    neighbour only. Warm-up rounds are interleaved the same way. `on_round(i)` is called after each timed
    round, for a progress bar.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + runs):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            fn = fns[name]
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            if r >= warmup:
                samples[name].append(elapsed)
        if r >= warmup and on_round is not None:
            on_round(r - warmup)
    return {name: Stats.of(samples[name]) for name in names}
