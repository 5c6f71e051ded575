"""What every device is: a spec string, a description of its machine, a check, and `bench` giving the results JSON.

`edgevit bench --device D` and the farm both go through `open_device(spec)`; a device that cannot be used
(unknown kind, unreachable, runtime missing) raises DeviceError in one line, and one that disappears while
benching raises DeviceLost (a DeviceError), which the farm records as a failure and retries.

Inputs: a caller that has the bundle's fidelity inputs (`edgevit bench` uses photos) passes them as
`(per_unit_inputs, note)`; without them the device draws seeded random inputs of every unit's shapes and dtypes
and says so in the results (the harness cannot import edgevit's photo loader).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from benchmarks.bench import BenchSettings, Progress

UnitInputs = Mapping[str, Sequence[tuple[np.ndarray, ...]]]
BenchInputs = tuple[UnitInputs, str]
SEEDED_SAMPLES = 8


class DeviceError(RuntimeError):
    """A device that cannot be used (unknown kind, unreachable, runtime missing): one line naming it and the fix."""


class DeviceLost(DeviceError):
    """A device that answered at first and then disappeared mid-run (connection dropped, device unplugged)."""


class Device(Protocol):
    spec: str
    kind: str

    def describe(self) -> dict[str, Any]: ...

    def check(self) -> None: ...

    def bench(
        self, bundle: Path, settings: BenchSettings, progress: Progress | None = None, inputs: BenchInputs | None = None
    ) -> dict[str, Any]: ...


def seeded_inputs(manifest: dict[str, Any], samples: int = SEEDED_SAMPLES) -> BenchInputs:
    """Per unit, `samples` seeded random input tuples (normal floats, 0/1 integers and bools), and the note."""
    inputs = {}
    for unit in manifest["units"]:
        rng = np.random.default_rng(0)
        rows = []
        for _ in range(samples):
            sample = []
            for t in unit["inputs"]:
                if t["dtype"] == "bool" or t["dtype"].startswith(("int", "uint")):
                    sample.append(rng.integers(0, 2, size=t["shape"]).astype(t["dtype"]))
                else:
                    sample.append(rng.standard_normal(t["shape"]).astype(t["dtype"]))
            rows.append(tuple(sample))
        inputs[unit["name"]] = rows
    return inputs, f"{samples} seeded random inputs per unit (seed 0; no photos: the caller passed no inputs)"


def label_of(art: dict[str, Any]) -> str:
    return f"{art['unit']} · {art['target']} {art['precision']}"
