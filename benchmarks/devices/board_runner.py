"""The runner copied to an ssh or mac device: benches artifacts with the runtimes installed THERE.

A board may have neither torch nor edgevit, so this file is self-contained: it imports the standard library,
numpy, and only the runtime of the artifact it runs (onnxruntime, ai_edge_litert, executorch (whose Python
runtime itself needs torch) or coremltools), plus `energy.py` (the harness's meter reader, stdlib only) when it
was copied beside it. Its runners mirror `converters/targets/*/runner.py` (same session options, same LiteRT
index order and affine (de)quantisation, same ExecuTorch and Core ML calls) so that a board's figures and outputs
mean what the local bench's do; its timing mirrors `benchmarks.timing.interleaved` with one peer (one
perf_counter pair around each call) and its memory figure is `bench_child`'s (VmHWM, ru_maxrss off Linux).

Three modes, all talking JSON lines on stdout:
- `runner.py probe`: the machine (described from here) and which runtimes import, with their versions;
- `runner.py job JOB.json`: every artifact of the job, each in its own child process (`runner.py one`, so its
  peak memory is its own and a crashing runtime costs one row), relaying the child's lines tagged with the
  artifact's index; the last line is {"done": true};
- `runner.py one REQUEST.json`: one artifact (load twice, run every input, time, meter), as `bench_child` does.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

# target -> (module to import, distribution whose version is reported)
RUNTIMES = {
    "onnx": ("onnxruntime", "onnxruntime"),
    "tflite": ("ai_edge_litert.interpreter", "ai-edge-litert"),
    "executorch": ("executorch.runtime", "executorch"),
    "coreml": ("coremltools", "coremltools"),
}
DISTRIBUTIONS = ("numpy", "onnxruntime", "ai-edge-litert", "executorch", "torch", "coremltools")
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "asimd", "asimddp",
             "sve", "i8mm", "bf16")  # fmt: skip


def high_water_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe() -> dict[str, Any]:
    """The same keys as `benchmarks.machine.describe_machine`, taken on this host (torch fields: not used here)."""
    cpuinfo = ""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        pass
    model, flags = platform.processor() or "unknown", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model") and model in ("unknown", "", platform.machine()):
            model = value.strip()
        elif key.strip() in ("flags", "Features") and not flags:
            flags = set(value.split())
    if sys.platform == "darwin":
        try:
            model = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                   check=False).stdout.strip() or model  # fmt: skip
        except OSError:
            pass
    try:
        ram = round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    except (ValueError, OSError):
        ram = None
    return {
        "taken_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017 (boards run older Pythons)
        "hostname": platform.node(),
        "cpu_model": model,
        "architecture": platform.machine(),
        "cores_available": cores(),
        "cores_online": os.cpu_count(),
        "virtualised": "hypervisor" in flags,
        "isa": {flag: flag in flags for flag in ISA_FLAGS},
        "ram_gib": ram,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {d: version(d) for d in DISTRIBUTIONS},
        "torch_threads": None,
        "torch_parallel_backend": "not used by the board runner",
        "threading_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")},
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "emulated": emulated(cpuinfo),
    }


def emulated(cpuinfo: str) -> str | None:
    """Why this looks like an emulator (an ARM Python reading an x86 host's /proc/cpuinfo, as under qemu-user),
    or None: timings taken under emulation are the emulator's, and the results must say so."""
    arch = platform.machine().lower()
    x86_host = any(v in cpuinfo for v in ("GenuineIntel", "AuthenticAMD")) or " sse2 " in cpuinfo
    if arch.startswith(("aarch64", "arm")) and x86_host:
        return f"{arch} Python on an x86 CPU (qemu-user)"
    return None


def probe() -> dict[str, Any]:
    """Each runtime is imported in a child interpreter: one that crashes on import (seen: onnxruntime segfaulting
    under qemu-user) is then a runtime missing here, not a probe that dies."""
    runtimes = {}
    for target, (module, dist) in RUNTIMES.items():
        done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False)
        if done.returncode == 0:
            runtimes[target] = {"available": True, "version": version(dist)}
        else:
            lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
            runtimes[target] = {"available": False, "reason": lines[-1][:200]}
    return {"machine": describe(), "runtimes": runtimes}


def matched(*seqs: Any) -> Any:
    """zip that refuses a wrong input count (zip(strict=) needs Python 3.10; boards may run older ones)."""
    if len({len(s) for s in seqs}) > 1:
        raise ValueError(f"expected {len(seqs[-1])} inputs, got {len(seqs[-2])}")
    return zip(*seqs)  # noqa: B905 (lengths checked above)


def as_dtype(x: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=spec["dtype"])
    if list(x.shape) != list(spec["shape"]):
        raise ValueError(f"input {spec['name']!r}: shape {x.shape}, artifact expects {spec['shape']}")
    return x


class Onnx:
    def __init__(self, path: Path, threads: int, art: dict[str, Any]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.specs = art["inputs"]
        self.names = [i.name for i in self.session.get_inputs()]
        self.out = [o.name for o in self.session.get_outputs()]
        self.num_threads = threads

    def run(self, *xs: np.ndarray) -> list[np.ndarray]:
        feed = {n: as_dtype(x, s) for n, x, s in matched(self.names, xs, self.specs)}
        return list(self.session.run(self.out, feed))


class LiteRT:
    def __init__(self, path: Path, threads: int, art: dict[str, Any]) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.ins = self.interpreter.get_input_details()
        self.outs = self.interpreter.get_output_details()
        self.num_threads = threads

    def run(self, *xs: np.ndarray) -> list[np.ndarray]:
        for d, x in matched(self.ins, xs):
            scale, zero = d["quantization"]
            dtype = np.dtype(d["dtype"])
            x = np.asarray(x)
            if scale and np.issubdtype(dtype, np.integer) and np.issubdtype(x.dtype, np.floating):
                info = np.iinfo(dtype)
                x = np.clip(np.round(x / scale) + zero, info.min, info.max)
            self.interpreter.set_tensor(d["index"], np.ascontiguousarray(x, dtype=dtype))
        self.interpreter.invoke()
        result = []
        for d in self.outs:
            y = self.interpreter.get_tensor(d["index"])
            scale, zero = d["quantization"]
            if scale and np.issubdtype(np.dtype(d["dtype"]), np.integer):
                y = ((y.astype(np.float32) - zero) * np.float32(scale)).astype(np.float32)
            result.append(y)
        return result


class ExecuTorch:
    def __init__(self, path: Path, threads: int, art: dict[str, Any]) -> None:
        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        if threads != portable_lib._threadpool_get_thread_count():
            portable_lib._unsafe_reset_threadpool(threads)
        self.num_threads = portable_lib._threadpool_get_thread_count()
        self.method = Runtime.get().load_program(Path(path)).load_method("forward")
        self.specs, self.from_numpy = art["inputs"], torch.from_numpy

    def run(self, *xs: np.ndarray) -> list[np.ndarray]:
        tensors = [self.from_numpy(as_dtype(x, s)) for x, s in matched(xs, self.specs)]
        return [t.numpy() for t in self.method.execute(tensors)]


class CoreML:
    def __init__(self, path: Path, threads: int, art: dict[str, Any]) -> None:
        import coremltools as ct

        self.model = ct.models.MLModel(str(path))
        self.specs, self.out = art["inputs"], [o["name"] for o in art["outputs"]]
        self.num_threads = 0  # Core ML schedules its own threads and compute units

    def run(self, *xs: np.ndarray) -> list[np.ndarray]:
        result = self.model.predict({s["name"]: as_dtype(x, s) for x, s in matched(xs, self.specs)})
        return [np.asarray(result[name]) for name in self.out]


RUNNERS = {"onnx": Onnx, "tflite": LiteRT, "executorch": ExecuTorch, "coreml": CoreML}


def load_inputs(path: Path) -> list[tuple[np.ndarray, ...]]:
    with np.load(path) as data:
        samples: dict[int, dict[int, np.ndarray]] = {}
        for key in data.files:
            sample, position = (int(k) for k in key[1:].split("_"))
            samples.setdefault(sample, {})[position] = data[key]
    return [tuple(s[i] for i in sorted(s)) for _, s in sorted(samples.items())]


def bench_one(request: dict[str, Any], emit: Any) -> dict[str, Any]:
    baseline = high_water_bytes()
    art, path = request["artifact"], Path(request["path"])
    threads = request["threads"] or cores()
    make = RUNNERS[art["target"]]
    start = time.perf_counter()
    runner = make(path, threads, art)
    first_load_seconds = time.perf_counter() - start
    del runner
    start = time.perf_counter()
    runner = make(path, threads, art)
    load_seconds = time.perf_counter() - start
    inputs = load_inputs(Path(request["inputs"]))
    outputs = [runner.run(*x) for x in inputs]
    np.savez(request["outputs"], **{f"o{i}_{j}": o for i, out in enumerate(outputs) for j, o in enumerate(out)})
    first, samples = inputs[0], []
    for r in range(request["warmup"] + request["runs"]):
        t0 = time.perf_counter()
        runner.run(*first)
        elapsed = time.perf_counter() - t0
        if r >= request["warmup"]:
            samples.append(elapsed)
            emit({"round": r - request["warmup"] + 1})
    return {
        "samples_s": samples,
        "load_seconds": load_seconds,
        "first_load_seconds": first_load_seconds,
        "threads": runner.num_threads,
        "memory": {"baseline_bytes": baseline, "peak_bytes": high_water_bytes()},
        "energy": energy_of(request, lambda: runner.run(*first)),
        "pid": os.getpid(),
    }


def energy_of(request: dict[str, Any], run_once: Any) -> dict[str, Any]:
    """Joules per inference from this host's meter through the harness's `energy.py`, or why not."""
    try:
        from energy import find_meters, measure_energy
    except ImportError:
        return {"measured": False, "reason": "not measured: energy.py was not copied beside the runner"}
    meters, why_not = find_meters(Path(request["sys_root"]))
    if not meters:
        return {"measured": False, "reason": why_not}
    return measure_energy(meters[0], run_once, idle_seconds=request["energy_idle_s"],
                          window_seconds=request["energy_window_s"])  # fmt: skip


def run_job(job_path: Path, emit: Any) -> None:
    job = json.loads(job_path.read_text())
    for request in job["requests"]:
        index = request["index"]
        req_path = job_path.parent / f"a{index}.json"
        req_path.write_text(json.dumps({**job["common"], **request}))
        with open(job_path.parent / "runner.log", "ab") as log:
            child = subprocess.Popen([sys.executable, __file__, "one", str(req_path)], stdout=subprocess.PIPE,
                                     stderr=log, text=True)  # fmt: skip
            last: dict[str, Any] = {}
            assert child.stdout is not None
            for line in child.stdout:
                last = json.loads(line)
                emit({"index": index, **last})
            code = child.wait()
        if "result" not in last and "error" not in last:
            emit({"index": index, "error": f"the runner process exited with code {code} (see runner.log there)"})
    emit({"done": True})


def main() -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # a runtime's own printing goes to stderr, not into the protocol

    def emit(message: dict[str, Any]) -> None:
        proto.write(json.dumps(message) + "\n")

    mode = sys.argv[1]
    if mode == "probe":
        emit(probe())
    elif mode == "job":
        run_job(Path(sys.argv[2]), emit)
    else:
        request = json.loads(Path(sys.argv[2]).read_text())
        try:
            emit({"result": bench_one(request, emit)})
        except Exception as exc:  # this artifact's recorded failure
            text = str(exc).strip().splitlines()
            emit({"error": f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")})
            sys.exit(1)


if __name__ == "__main__":
    main()
