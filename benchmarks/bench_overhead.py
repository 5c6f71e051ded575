"""The harness's own cost per timed call, measured against a ~1 ms model (the issue's bar: <= 2 % of it).

The model is one ONNX MatMul (n x n by a constant n x n) with n chosen here so that onnxruntime takes about
1 ms, run through the same runner `bench_child` uses. Two figures:
- in every sample: a no-op timed by `timing.interleaved` measures what lies between its two clock reads
  besides the model (the clock itself, the call of the closure); that is what inflates each reported latency;
- in wall time: blocks of no-op calls through `interleaved` against the same in a bare `for` loop, alternated
  (so load drift hits both), medians of the per-call block means; this adds the bookkeeping between samples
  (appending, rotating peers), which does not enter the reported latency but does lengthen a run.
Both are measured on a no-op because the harness's cost is a few hundred nanoseconds: timing it as the
difference of two runs of a 1 ms model would measure the machine's load drift (tens of µs here), not the harness.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.timing import interleaved


def write_matmul(path: Path, n: int) -> None:
    """An ONNX model computing X @ W for X [n, n] float32 and a constant W."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "matmul",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, n])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def block_seconds(calls: int, harness: bool) -> float:
    """Wall time per call of `calls` no-op calls, through `interleaved` or in a bare loop."""
    noop = lambda: None  # noqa: E731
    start = time.perf_counter()
    if harness:
        interleaved({"fn": noop}, warmup=0, runs=calls)
    else:
        for _ in range(calls):
            noop()
    return (time.perf_counter() - start) / calls


def measure_overhead(
    threads: int | None, target_ms: float = 1.0, rounds: int = 7, calls: int = 20000
) -> dict[str, Any]:
    """Both overhead figures (see the module docstring) and the model they were measured against."""
    from converters.runtime import RuntimeUnavailableError, load_runner

    with tempfile.TemporaryDirectory(prefix="edgevit-overhead-") as tmp:
        n, runner, x = 128, None, None
        try:
            for _ in range(3):  # latency ~ n^3: two corrections land near the target
                path = Path(tmp) / f"matmul{n}.onnx"
                write_matmul(path, n)
                runner = load_runner("onnx", path, threads)
                x = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
                seconds = interleaved({"m": lambda r=runner, a=x: r.run(a)}, warmup=5, runs=30)["m"].median
                n_next = max(16, round(n * (target_ms / 1e3 / seconds) ** (1 / 3)))
                if abs(n_next - n) <= 2:
                    break
                n = n_next
        except (ImportError, RuntimeUnavailableError) as exc:
            return {"measured": False, "summary": f"not measured: onnxruntime is needed ({exc})"}
        model = lambda: runner.run(x)  # noqa: E731
        model_stats = interleaved({"m": model}, warmup=10, runs=200)["m"]
        noop = interleaved({"noop": lambda: None}, warmup=100, runs=5000)["noop"]
        harness, bare = [], []
        for r in range(rounds):
            for through in (True, False) if r % 2 == 0 else (False, True):
                (harness if through else bare).append(block_seconds(calls, through))
    model_ms = model_stats.median * 1e3
    sample_us = noop.median * 1e6
    wall_us = (float(np.median(harness)) - float(np.median(bare))) * 1e6
    return {
        "measured": True,
        "model": f"ONNX MatMul {n}x{n} @ {n}x{n} fp32, onnxruntime, {runner.num_threads} threads",
        "model_median_ms": model_ms,
        "in_sample_us": sample_us,
        "in_sample_pct": 100 * sample_us / 1e3 / model_ms,
        "wall_per_call_us": wall_us,
        "wall_per_call_pct": 100 * wall_us / 1e3 / model_ms,
        "how": (
            f"a no-op timed 5000 times by timing.interleaved (median); {rounds} alternated blocks of {calls} no-op "
            "calls through interleaved vs a bare loop (medians); both divided by the MatMul's median of 200 calls"
        ),
        "summary": (
            f"{sample_us:.2f} µs inside each sample ({100 * sample_us / 1e3 / model_ms:.3f} % of a "
            f"{model_ms:.2f} ms MatMul); {wall_us:+.1f} µs wall time per call vs a bare loop "
            f"({100 * wall_us / 1e3 / model_ms:+.3f} %, no-op blocks of {calls}, medians of {rounds})"
        ),
    }
