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

import numpy as np
import typer

from edgevit.errors import EdgevitError

FIDELITY_INPUTS = 8


def bench(
    bundle: Path,
    target: str | None,
    runs: int,
    warmup: int,
    threads: int | None,
    as_json: bool,
    out: Path | None,
    force: bool,
) -> None:
    from rich.console import Console

    from benchmarks.bench import BenchSettings, bench_bundle
    from benchmarks.bench_results import results_tables
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
    with bench_progress(console) as progress:
        results = bench_bundle(bundle, inputs, note, settings, progress)
    text = json.dumps(json_safe(results), indent=1, allow_nan=False) + "\n"
    if out is not None:
        with atomic_file(out, force) as tmp:
            tmp.write_text(text)
    if as_json:
        sys.stdout.write(text)
    else:
        print_tables(results_tables(results), Console())


def bench_inputs(manifest: dict[str, Any]) -> tuple[dict[str, list[tuple[np.ndarray, ...]]], str]:
    """Per unit, `FIDELITY_INPUTS` input tuples (photos for the image input, seeded random for the rest)."""
    from edgevit.data.images import load_rgb, preprocess
    from edgevit.models.spec import ModelSpec

    model = manifest["model"]
    size = list(model["input_size"])
    photos, record = load_rgb("builtin", min_images=1, max_images=FIDELITY_INPUTS)
    spec = ModelSpec(
        model["name"], model["variant"], tuple(size), model["task"], tuple(model["mean"]), tuple(model["std"])
    )
    raw = ModelSpec(model["name"], model["variant"], tuple(size), model["task"], (0.0, 0.0, 0.0), (1 / 255,) * 3)
    inputs: dict[str, list[tuple[np.ndarray, ...]]] = {}
    for unit in manifest["units"]:
        rng = np.random.default_rng(0)
        samples = []
        for s in range(FIDELITY_INPUTS):
            sample = []
            for tensor in unit["inputs"]:
                if tensor["shape"] == [1, 3, *size] and tensor["dtype"] == "float32":
                    how = raw if tensor["name"] in unit["image_inputs"] else spec
                    sample.append(preprocess(photos[s % len(photos)], how).numpy())
                else:
                    sample.append(random_input(rng, tensor["shape"], tensor["dtype"]))
            samples.append(tuple(sample))
        inputs[unit["name"]] = samples
    note = (
        f"{FIDELITY_INPUTS} inputs per unit: image inputs from {record['used']} photo(s) scikit-image ships "
        "(resized, centre-cropped, normalised as the manifest says), other inputs seeded random (seed 0); "
        "the first is the one timed"
    )
    return inputs, note


def random_input(rng: np.random.Generator, shape: list[int], dtype: str) -> np.ndarray:
    """A seeded input of `shape`: standard normal floats, 0/1 for bool, small non-negative integers."""
    if dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.startswith(("int", "uint")):
        return rng.integers(0, 2, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


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
) -> None:
    """Time every artifact of a bundle here: latency, throughput, peak memory, load time, fidelity, energy.

    Example: edgevit bench bundle/ --runs 50 --threads 1 --out results.json
    """
    bench(bundle, target, runs, warmup, threads, as_json, out, force)
