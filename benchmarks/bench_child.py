"""One artifact timed in its own process (`python -m benchmarks.bench_child REQUEST.json`), so that its peak
memory is the runner's and not the sum of every artifact benched before it.

Peak memory is the kernel's high-water mark of resident memory (`VmHWM` in /proc/self/status; `ru_maxrss`
where there is no /proc) read twice: after the interpreter, numpy, torch and the converters are imported
(`baseline`), and after the artifact was loaded, run on every input, timed and metered (`peak`). `peak -
baseline` is what loading and running this artifact added; `peak` is the whole process, as a user running it
from Python would see it.

Load time is taken on a second load in the process (`load_seconds`: the runtime already imported, as an app
loading a model sees it); the first, which also imports the runtime's Python module, is `first_load_seconds`.

The request names the bundle, the artifact, the thread count, the input file (npz) and where to write the
outputs (npz). Progress and the result go out as JSON lines on the original stdout; the backends' own printing
(C++ included) is sent to stderr, which the parent keeps in a log, so it cannot corrupt the protocol.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def high_water_bytes() -> int:
    """Peak resident memory of this process so far, in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def load_inputs(path: Path) -> list[tuple[np.ndarray, ...]]:
    """The npz the parent wrote: arrays named `i<sample>_<input>` in order."""
    with np.load(path) as data:
        samples: dict[int, dict[int, np.ndarray]] = {}
        for key in data.files:
            sample, position = (int(k) for k in key[1:].split("_"))
            samples.setdefault(sample, {})[position] = data[key]
    return [tuple(s[i] for i in sorted(s)) for _, s in sorted(samples.items())]


def bench_artifact(request: dict[str, Any], emit: Any) -> dict[str, Any]:
    """Load, run every input once (outputs saved for fidelity), time, meter; the figures as plain JSON."""
    from benchmarks.energy import find_meters, measure_energy
    from benchmarks.timing import interleaved
    from converters.bundle import verify_artifact
    from converters.runtime import load_runner

    baseline = high_water_bytes()
    art = request["artifact"]
    path = verify_artifact(Path(request["bundle"]), art, request.get("index"))
    start = time.perf_counter()
    runner = load_runner(art["target"], path, request["threads"])
    first_load_seconds = time.perf_counter() - start  # includes importing the runtime's Python module
    del runner
    start = time.perf_counter()
    runner = load_runner(art["target"], path, request["threads"])
    load_seconds = time.perf_counter() - start
    inputs = load_inputs(Path(request["inputs"]))
    outputs = [runner.run(*x) for x in inputs]
    np.savez(request["outputs"], **{f"o{i}_{j}": o for i, out in enumerate(outputs) for j, o in enumerate(out)})
    first = inputs[0]
    stats = interleaved(
        {"run": lambda: runner.run(*first)},
        warmup=request["warmup"],
        runs=request["runs"],
        on_round=lambda i: emit({"round": i + 1}),
    )["run"]
    meters, why_not = find_meters(Path(request["sys_root"]))
    if meters:
        energy = measure_energy(
            meters[0],
            lambda: runner.run(*first),
            idle_seconds=request["energy_idle_s"],
            window_seconds=request["energy_window_s"],
        )
    else:
        energy = {"measured": False, "reason": why_not}
    return {
        "samples_s": list(stats.samples),
        "load_seconds": load_seconds,
        "first_load_seconds": first_load_seconds,
        "threads": runner.num_threads,
        "memory": {"baseline_bytes": baseline, "peak_bytes": high_water_bytes()},
        "energy": energy,
        "pid": os.getpid(),
    }


def main() -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever a backend prints to stdout lands in the parent's log, not in the protocol

    def emit(message: dict[str, Any]) -> None:
        proto.write(json.dumps(message) + "\n")

    request = json.loads(Path(sys.argv[1]).read_text())
    try:
        emit({"result": bench_artifact(request, emit)})
    except Exception as exc:  # reported to the parent as this artifact's recorded failure
        text = str(exc).strip().splitlines()
        emit({"error": f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")})
        sys.exit(1)


if __name__ == "__main__":
    main()
