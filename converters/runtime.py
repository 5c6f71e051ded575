"""Runners: call a converted artifact from Python with numpy arrays, in the unit's input/output order.

The same runners drive converted EfficientTAM units frame after frame in the video tracker, so everything
that costs (loading, session/graph building, delegate setup, name-to-index lookups) happens once in the
constructor and `run` only copies tensors in, invokes, and copies them out. Each target's runner lives in its
package (`converters/targets/<name>/runner.py`) and imports its backend there, so importing this module
stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from converters.artifact import TensorSpec
from converters.errors import RuntimeUnavailableError
from converters.targets.registry import target_info

__all__ = ["Runner", "RuntimeUnavailableError", "available_cores", "load_runner", "prepare_inputs"]


class Runner(Protocol):
    """A loaded artifact: `run` takes and returns arrays positionally, in the order of the names."""

    target: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    num_threads: int

    def run(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]: ...


def load_runner(target: str, path: Path, num_threads: int | None = None) -> Runner:
    """Load `path` with the runtime of `target`; `num_threads` None means one thread per available core.

    RuntimeUnavailableError (saying why) when this machine has no runtime for `target`.
    """
    info = target_info(target)
    if reason := info.why_not_here():
        raise RuntimeUnavailableError(reason)
    return info.part("runner").load_runner(Path(path), num_threads)


def available_cores() -> int:
    """Cores this process may run on (not the machine's count: containers and taskset narrow it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def prepare_inputs(inputs: tuple[np.ndarray, ...], specs: tuple[TensorSpec, ...]) -> list[np.ndarray]:
    """Match the artifact's dtypes (a no-op when they already do) and fail on a wrong count or shape with
    the input's name, which backends otherwise report as an opaque index or a crash."""
    if len(inputs) != len(specs):
        raise ValueError(f"expected {len(specs)} inputs ({', '.join(s.name for s in specs)}), got {len(inputs)}")
    out = []
    for x, spec in zip(inputs, specs, strict=True):
        x = np.ascontiguousarray(x, dtype=spec.dtype)
        if len(x.shape) != len(spec.shape) or any(d >= 0 and d != n for d, n in zip(spec.shape, x.shape, strict=True)):
            raise ValueError(f"input {spec.name!r}: shape {x.shape}, artifact expects {spec.shape}")
        out.append(x)
    return out
