"""Latency of Mix'n'Match sub-models, measured through ONNX Runtime on this machine and cached.

Measuring every candidate would mean exporting hundreds of models, so a search costs choices with a model
fitted to measurements: the g uniform sub-models (every block at one width) are exported and timed, and a
per-choice latency is the smallest model's plus, for each block, 1/L of the step its width adds in the uniform
models (blocks are alike, and their MLPs run one after another). The chosen sub-model itself is then measured,
so the budget is checked on a real timing, not on the fit.

A timing is the median of `RUNS` calls on one thread (the phone case: one big core), after warm-up; it is
cached per machine, runtime version and model shapes (weights do not change the time), so repeated extractions
and a recipe's replay measure once.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from edgevit.models.matvit import MatViT

RUNS = 40
WARMUP = 5
THREADS = 1


def default_cache() -> Path:
    from edgevit.training.students import default_cache_dir

    return default_cache_dir().parent / "matformer" / "latency.json"


def _key(module: nn.Module) -> str:
    import onnxruntime

    shapes = sorted((k, list(v.shape)) for k, v in module.state_dict().items())
    machine = [platform.machine(), platform.processor(), os.cpu_count(), platform.node()]
    blob = {"shapes": shapes, "ort": onnxruntime.__version__, "machine": machine, "threads": THREADS, "runs": RUNS}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def measure_ms(module: nn.Module, cache: Path | None = None) -> float:
    """Median ONNX Runtime latency in ms of `module`'s one deploy unit (a model with `deploy_units()`), cached."""
    cache = cache or default_cache()
    key = _key(module)
    table = json.loads(cache.read_text()) if cache.is_file() else {}
    if key in table:
        return float(table[key])
    ms = _time_onnx(module)
    table[key] = ms
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(table, indent=1, sort_keys=True))
    os.replace(tmp, cache)
    return ms


def _time_onnx(module: nn.Module) -> float:
    from converters.targets.onnx.lower import convert
    from converters.targets.onnx.runner import OnnxRuntimeRunner

    (unit,) = module.deploy_units()
    inputs = tuple(x.numpy() for x in unit.example_inputs)
    with tempfile.TemporaryDirectory(prefix="edgevit-matformer-") as folder:
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
