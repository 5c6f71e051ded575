"""Latency of Mix'n'Match sub-models, measured through ONNX Runtime on this machine and cached.

Measuring every candidate would mean exporting hundreds of models, so a search costs choices with a model
fitted to measurements: the g uniform sub-models (every block at one width) are exported and timed, and a
per-choice latency is the smallest model's plus, for each block, 1/L of the step its width adds in the uniform
models (blocks are alike, and their MLPs run one after another). The chosen sub-model itself is then measured,
so the budget is checked on a real timing, not on the fit.

Timings come from `edgevit.compress.latency` (ONNX Runtime, one thread, cached per machine and shapes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import nn

from edgevit.compress.latency import unit_ms
from edgevit.models.matvit import MatViT


def measure_ms(module: nn.Module, cache: Path | None = None) -> float:
    """Median ONNX Runtime latency in ms of `module`'s one deploy unit (a model with `deploy_units()`), cached."""
    (unit,) = module.deploy_units()
    return unit_ms(unit, cache)


class LatencyModel:
    """Per-choice latency fitted to the measured uniform sub-models (see the module docstring)."""

    def __init__(self, model: MatViT, cache: Path | None = None) -> None:
        count, self.depth = len(model.cfg.granularities), model.cfg.depth
        uniform = [measure_ms(model.extract(g), cache) for g in range(count)]
        for g in range(1, count):  # timing noise must not make a wider model look faster
            uniform[g] = max(uniform[g], uniform[g - 1])
        self.uniform = uniform
        self.step = [(u - uniform[0]) / self.depth for u in uniform]

    def __call__(self, levels: Sequence[int]) -> float:
        return self.uniform[0] + sum(self.step[g] for g in levels)
