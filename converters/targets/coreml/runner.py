"""Core ML prediction through coremltools, which exists only on macOS (the farm's mac hosts).

`converters.runtime.load_runner` asks the registry first, so off macOS it raises RuntimeUnavailableError
(which parity turns into a note on the artifact) before this runner is tried.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converters.runtime import prepare_inputs
from converters.targets.coreml.lower import feature_specs


class CoreMLRunner:
    """A saved .mlpackage loaded (compiled) by Core ML and run with `predict`."""

    target = "coreml"

    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        import coremltools as ct

        # Core ML schedules its own threads and compute units; the count is recorded as unknown (0).
        self.num_threads = 0
        self._model = ct.models.MLModel(str(path))
        spec = self._model.get_spec()
        self.inputs = feature_specs(spec.description.input)
        self.outputs = feature_specs(spec.description.output)

    def run(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        feed = {s.name: x for s, x in zip(self.inputs, prepare_inputs(inputs, self.inputs), strict=True)}
        result = self._model.predict(feed)
        return tuple(np.asarray(result[s.name]) for s in self.outputs)


def load_runner(path: Path, num_threads: int | None = None) -> CoreMLRunner:
    """Core ML model for `path` (macOS only: see the registry's `runs_on`)."""
    return CoreMLRunner(path, num_threads)
