"""`edgevit bench`: time, measure and compare every artifact of a bundle on this machine (the harness in
`benchmarks.bench` does the work; this command picks the inputs, shows progress and writes the results).

Inputs: the bundle does not store reference inputs, so image inputs (the model's [1, 3, H, W] float input) are
the photos scikit-image ships, preprocessed as the manifest says (normalised, or 0..255 for a unit that takes
the image raw); every other input is drawn from a seeded generator in the unit's shape and dtype.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from edgevit.data.bench_inputs import bench_inputs
from edgevit.errors import EdgevitError


def bench(
    bundle: Path,
    target: str | None,
    runs: int,
    warmup: int,
    threads: int | None,
    as_json: bool,
    out: Path | None,
    force: bool,
    device: str = "local",
) -> None:
    from rich.console import Console

    from benchmarks.bench import BenchSettings
    from benchmarks.bench_results import results_tables
    from benchmarks.devices import DeviceError, open_device
    from benchmarks.report import json_safe, print_tables
    from converters.bundle import atomic_file, check_file_out, read_manifest
    from converters.targets.registry import resolve_targets

    targets = resolve_targets(target) if target and target != "all" else None
    if out is not None:
        check_file_out(out, force)
    manifest = read_manifest(bundle)
    if targets is not None and not any(a["target"] in targets for a in manifest["artifacts"]):
        have = ", ".join(sorted({a["target"] for a in manifest["artifacts"]}))
        raise EdgevitError(f"{bundle} has no {', '.join(targets)} artifact; it holds: {have}")
    inputs, note = bench_inputs(manifest)
    settings = BenchSettings(runs=runs, warmup=warmup, threads=threads, targets=targets)
    console = Console(stderr=True)
    try:  # a device that cannot be reached or is lost mid-run: one line (the farm records it instead)
        bench_on = open_device(device)
        bench_on.check()
        with bench_progress(console) as progress:
            results = bench_on.bench(bundle, settings, progress, (inputs, note))
    except DeviceError as exc:
        raise EdgevitError(str(exc)) from None
    text = json.dumps(json_safe(results), indent=1, allow_nan=False) + "\n"
    if out is not None:
        with atomic_file(out, force) as tmp:
            tmp.write_text(text)
    if as_json:
        sys.stdout.write(text)
    else:
        print_tables(results_tables(results), Console())


def bench_progress(console: Any) -> Any:
    """A rich progress bar on stderr (quiet off a terminal); the returned object is also the harness's callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    class Bar(Progress):
        tasks_by_label: dict[str, Any]

        def __call__(self, label: str, done: int, total: int) -> None:
            if label not in self.tasks_by_label:
                self.tasks_by_label[label] = self.add_task(label, total=total)
            self.update(self.tasks_by_label[label], completed=done)

    bar = Bar(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    bar.tasks_by_label = {}
    return bar


def bench_cmd(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder written by `edgevit convert`.")],
    target: Annotated[str | None, typer.Option(help="Only these targets: onnx, tflite, ... or a comma list.")] = None,
    runs: Annotated[int, typer.Option(min=1, help="Timed calls per artifact, after warm-up.")] = 50,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed calls first (allocation, lazy init, caches).")] = 5,
    threads: Annotated[int | None, typer.Option(min=1, help="Runtime threads (default: one per core).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    out: Annotated[Path | None, typer.Option(help="Write the results JSON here (input to `edgevit report`).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
    device: Annotated[
        str, typer.Option(help="local, ssh:[USER@]HOST[:PORT], adb:SERIAL or mac:HOST (see benchmarks/devices).")
    ] = "local",
) -> None:
    """Time every artifact of a bundle here: latency, throughput, peak memory, load time, fidelity, energy.

    Example: edgevit bench bundle/ --runs 50 --threads 1 --out results.json  (add --device ssh:pi@board to run there)
    """
    bench(bundle, target, runs, warmup, threads, as_json, out, force, device)
