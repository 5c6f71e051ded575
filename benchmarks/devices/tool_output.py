"""Parsers of the on-device benchmark binaries' documented output, into a row's latency/load/memory fields.

- LiteRT/TFLite `benchmark_model` (tensorflow/lite/tools/benchmark/benchmark_model.cc): each `Run` logs a
  `Stat<int64_t>` line in µs, `count=N first=.. curr=.. min=.. max=.. avg=.. std=..` (newer builds append
  `p5=.. median=.. p95=..`), the warm-up run first and the timed run second; then `Inference timings in us:
  Init: .., First inference: .., Warmup (avg): .., Inference (avg): ..`, and a max-RSS delta from the tool's
  start, `Peak memory footprint (MB): init=.. overall=..` (older builds: `Memory footprint delta from the start
  of the tool (MB): ...`). It prints no per-run samples, so p10/p90/p99 are not known and stay None.
- ExecuTorch `executor_runner` (examples/portable/executor_runner/executor_runner.cpp), ET_LOG lines
  `I 00:00:00.123456 executorch:executor_runner.cpp:NNN] message` (runtime/platform/default/posix.cpp):
  `Model loaded in X ms.`, one `Iteration i of N: X ms` per execution (recent builds), and
  `Model executed successfully N time(s) in X ms.` (older builds: total only, or no time at all).
"""

from __future__ import annotations

import re
from typing import Any

from benchmarks.bench_results import latency_summary

_FLOAT = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_STAT = re.compile(rf"count=(\d+)((?:\s+\w+={_FLOAT})+)")
_TIMINGS = re.compile(
    rf"Inference timings in us: Init: ({_FLOAT}), First inference: ({_FLOAT}), "
    rf"Warmup \(avg\): ({_FLOAT}), Inference \(avg\): ({_FLOAT})"
)
_MEMORY = re.compile(rf"(Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\): "
                     rf"init=({_FLOAT}) overall=({_FLOAT})")  # fmt: skip
_ET_LOG = re.compile(r"^([DIEF]) \d+:\d\d:\d\d\.\d+ executorch:[\w.]+:\d+\] (.*)$")


class ToolOutputError(ValueError):
    """The tool's output holds no figure (it failed, or this is not its output): the reason in one line."""


def parse_benchmark_model(text: str) -> dict[str, Any]:
    """The timed run's statistics (ms), load time, first inference and memory from `benchmark_model` output."""
    stats = [_stat(m) for m in _STAT.finditer(text)]
    timings = _TIMINGS.search(text)
    if not stats or timings is None:
        errors = [line.strip() for line in text.splitlines() if line.strip().startswith("ERROR")]
        raise ToolOutputError(errors[-1] if errors else "benchmark_model printed no timings")
    timed = stats[-1]  # the warm-up Run logs first, the timed Run last
    median = timed.get("median")
    latency = {
        "median_ms": (median if median is not None else timed["avg"]) / 1e3,
        "p10_ms": None,
        "p90_ms": None,
        "p99_ms": None,
        "p5_ms": timed["p5"] / 1e3 if "p5" in timed else None,
        "p95_ms": timed["p95"] / 1e3 if "p95" in timed else None,
        "min_ms": timed["min"] / 1e3,
        "max_ms": timed["max"] / 1e3,
        "mean_ms": timed["avg"] / 1e3,
        "stdev_ms": timed["std"] / 1e3,
        "spread_pct": None,
        "n": int(timed["count"]),
        "samples_ms": [],
        "source": "benchmark_model's own summary (no per-run samples)"
        + ("" if median is not None else "; this build prints no median: median_ms is its avg"),
    }
    init_us, first_us, _, _ = (float(g) for g in timings.groups())
    result: dict[str, Any] = {"latency": latency, "load_seconds": init_us / 1e6, "first_inference_ms": first_us / 1e3}
    if memory := _MEMORY.search(text):
        result["memory"] = {
            "baseline_bytes": None,
            "peak_bytes": None,
            "added_bytes": int(float(memory.group(3)) * 2**20),
            "how": "benchmark_model's max-RSS delta from the tool's start (overall), as it prints it",
        }
    return result


def parse_executor_runner(text: str, warmup: int) -> dict[str, Any]:
    """Per-iteration samples after `warmup` (or the mean over all executions where only the total is printed),
    and the load time, from `executor_runner` output."""
    logged = [(m.group(1), m.group(2)) for line in text.splitlines() if (m := _ET_LOG.match(line.strip()))]
    messages = [msg for _, msg in logged]
    samples = [float(m.group(1)) for msg in messages if (m := re.match(rf"Iteration \d+ of \d+: ({_FLOAT}) ms", msg))]
    total = next((m for msg in messages if (m := re.match(r"Model executed successfully (\d+) time\(s\)", msg))), None)
    if total is None:
        errors = [msg for level, msg in logged if level in "EF"]
        raise ToolOutputError(errors[-1] if errors else "executor_runner did not report a successful execution")
    loaded = next(
        (float(m.group(1)) for msg in messages if (m := re.match(rf"Model loaded in ({_FLOAT}) ms", msg))), None
    )
    result: dict[str, Any] = {"load_seconds": loaded / 1e3 if loaded is not None else None}
    if len(samples) > warmup:
        result["latency"] = {**latency_summary([s / 1e3 for s in samples[warmup:]]), "source": "executor_runner"}
        return result
    timed = re.search(rf"in ({_FLOAT}) ms", total.string)
    if timed is None:
        raise ToolOutputError("this executor_runner build prints no execution time; use a newer one")
    count = int(total.group(1))
    mean = float(timed.group(1)) / count
    result["latency"] = {
        "median_ms": mean, "p10_ms": None, "p90_ms": None, "p99_ms": None, "min_ms": None, "max_ms": None,
        "mean_ms": mean, "stdev_ms": None, "spread_pct": None, "n": count, "samples_ms": [],
        "source": "executor_runner's total over all executions (warm-up included; no per-run samples): "
        "median_ms is the mean",
    }  # fmt: skip
    return result


def _stat(match: re.Match) -> dict[str, float]:
    fields = dict(pair.split("=") for pair in match.group(2).split())
    return {"count": float(match.group(1)), **{k: float(v) for k, v in fields.items()}}
