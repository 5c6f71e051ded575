"""Latency of a deploy unit measured through ONNX Runtime on this machine, cached: the cost that budgets in
milliseconds (MatFormer extraction, pruning by latency) are held to.

A timing is the median of `RUNS` calls on one thread (the phone case: one big core), after warm-up. It is cached
per machine, runtime version and shapes (weights do not change the time), so a search that revisits a shape
and a recipe's replay measure once; the cache is a JSON file replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from converters.unit import DeployUnit

RUNS = 40
WARMUP = 5
THREADS = 1


def default_cache() -> Path:
    from edgevit.training.students import default_cache_dir

    return default_cache_dir().parent / "latency.json"


def unit_ms(unit: DeployUnit, cache: Path | None = None) -> float:
    """Median ONNX Runtime latency of `unit` in ms, from `cache` when this shape was timed here before."""
    cache = cache or default_cache()
    key = _key(unit)
    table = read_timings(cache)
    if key in table:
        return float(table[key])
    ms = _time_onnx(unit)
    write_timings(cache, {**table, key: ms})
    return ms


def read_timings(cache: Path) -> dict[str, float]:
    """A timings cache (key → ms); empty when there is none yet."""
    return json.loads(cache.read_text()) if cache.is_file() else {}


def write_timings(cache: Path, table: dict[str, float]) -> None:
    """Replace the cache file atomically, so a concurrent reader never sees half a table."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(table, indent=1, sort_keys=True))
    os.replace(tmp, cache)


def _key(unit: DeployUnit) -> str:
    import onnxruntime

    shapes = sorted((k, list(v.shape)) for k, v in unit.module.state_dict().items())
    inputs = [list(x.shape) for x in unit.example_inputs]
    machine = [platform.machine(), platform.processor(), os.cpu_count(), platform.node()]
    blob = {
        "unit": unit.name,
        "shapes": shapes,
        "inputs": inputs,
        "ort": onnxruntime.__version__,
        "machine": machine,
        "threads": THREADS,
        "runs": RUNS,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _time_onnx(unit: DeployUnit) -> float:
    from converters.targets.onnx.lower import convert
    from converters.targets.onnx.runner import OnnxRuntimeRunner

    inputs = tuple(x.numpy() for x in unit.example_inputs)
    with tempfile.TemporaryDirectory(prefix="edgevit-latency-") as folder:
        path = Path(folder) / "model.onnx"
        convert(unit, "fp32", path)
        runner = OnnxRuntimeRunner(path, num_threads=THREADS)
        for _ in range(WARMUP):
            runner.run(*inputs)
        times = []
        for _ in range(RUNS):
            start = time.perf_counter()
            runner.run(*inputs)
            times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e3, 4)
