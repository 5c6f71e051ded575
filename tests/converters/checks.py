"""Assertions every target's artifact must satisfy, shared by the per-target test modules."""

from __future__ import annotations

import json
import re

import numpy as np
import torch

from converters import Artifact, DeployUnit, load_runner
from converters.artifact import size_and_sha256


def assert_artifact(art: Artifact, unit: DeployUnit, target: str, precision: str, backend: str) -> None:
    """The record describes the file on disk and the unit it came from."""
    assert art.target == target and art.unit == unit.name and art.precision == precision
    assert art.path.exists() and art.path.name.startswith(f"{unit.name}.{precision}.")
    assert (art.size_bytes, art.sha256) == size_and_sha256(art.path)
    assert re.fullmatch(r"[0-9a-f]{64}", art.sha256)
    assert [t.name for t in art.inputs] == list(unit.input_names)
    assert [t.shape for t in art.inputs] == [tuple(x.shape) for x in unit.example_inputs]
    eager = unit.run_eager(*unit.example_inputs)
    assert [t.name for t in art.outputs] == list(unit.output_names)
    assert [t.shape for t in art.outputs] == [tuple(y.shape) for y in eager]
    assert all(t.dtype == "float32" for t in (*art.inputs, *art.outputs))
    assert art.versions["torch"].startswith("2.") and art.versions[backend] != "not installed"
    assert art.conversion_seconds > 0
    json.dumps(art.to_dict(), allow_nan=False)


def assert_parity(art: Artifact, unit: DeployUnit, min_db: float, max_diff: float) -> None:
    assert art.parity is not None and art.parity_note is None
    assert list(art.parity) == list(unit.output_names)
    for name, fig in art.parity.items():
        assert fig.sqnr_db >= min_db, (name, fig)
        assert fig.max_abs_diff <= max_diff, (name, fig)


def assert_runner_order(art: Artifact, unit: DeployUnit, inputs: tuple[torch.Tensor, ...]) -> None:
    """Outputs come back in the unit's order (each matches its own eager output, not a sibling's), and a
    second call on other inputs neither reuses nor overwrites the first call's results."""
    runner = load_runner(art.target, art.path, num_threads=1)
    first = runner.run(*(x.numpy() for x in inputs))
    kept = [a.copy() for a in first]
    runner.run(*(x.numpy() * 0.5 for x in inputs))
    for got, keep, ref in zip(first, kept, unit.run_eager(*inputs), strict=True):
        assert got.shape == tuple(ref.shape)
        np.testing.assert_array_equal(got, keep)
        np.testing.assert_allclose(got, ref.numpy(), rtol=1e-2, atol=1e-2)
