"""`local`: this machine, benched by `benchmarks.bench.bench_bundle` exactly as `edgevit bench` always did."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.bench import BenchSettings, Progress, bench_bundle
from benchmarks.devices.base import BenchInputs, seeded_inputs
from converters.bundle import read_manifest


class LocalDevice:
    spec = "local"
    kind = "local"

    def describe(self) -> dict[str, Any]:
        from benchmarks.machine import describe_machine

        return describe_machine()

    def check(self) -> None:
        """Always usable: the runtimes missing here give "not run" rows, as in a plain `edgevit bench`."""

    def bench(
        self, bundle: Path, settings: BenchSettings, progress: Progress | None = None, inputs: BenchInputs | None = None
    ) -> dict[str, Any]:
        per_unit, note = inputs or seeded_inputs(read_manifest(bundle))
        return bench_bundle(Path(bundle), per_unit, note, settings, progress)
