"""What machine a figure was measured on, and what it can do at best.

A latency means little without the machine beside it: which ISA the kernels found, how many cores the process
really had, and whether those cores were shared with other jobs at the time. So every report carries the CPU,
the cores this process may use (not the machine's count: containers and taskset narrow it), the ISA extensions
that decide whether int8/bf16 paths exist (VNNI, AVX-512 BF16, AMX), the library versions, the load average,
the threading environment, and a measured fp32 GEMM rate against which "% of peak" is computed.

The threading environment matters more than it looks: PyTorch's OpenMP threads spin-wait by default, and on
cores shared with other jobs a spinning thread that gets descheduled stalls every parallel region (measured on
the project's 2-core VM under load: eager latency on 2 threads 3-30× that on 1 thread with OMP_WAIT_POLICY
unset, normal with OMP_WAIT_POLICY=PASSIVE).

Energy is reported only when a counter exists; a VM without RAPL or hwmon gets a plain "not measurable here",
never an estimate dressed as a figure.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

# The extensions that decide which fast paths exist for fp32/bf16/int8 on x86 (names as /proc/cpuinfo spells them).
ISA_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)

# Environment variables that change how eager PyTorch (OpenMP, MKL) and the runtimes schedule threads.
THREADING_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "MKL_NUM_THREADS")

# Distributions whose versions change the figures: the eager baseline and every runtime a suite times.
DEFAULT_DISTRIBUTIONS = (
    "torch",
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "executorch",
    "litert-torch",
    "ai-edge-litert",
    "coremltools",
)


def describe_machine(distributions: Iterable[str] = DEFAULT_DISTRIBUTIONS) -> dict[str, Any]:
    """A JSON-ready description of this machine and process, taken now (the load average changes)."""
    flags = _cpu_flags()
    return {
        "taken_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "cpu_model": _cpu_model(),
        "architecture": platform.machine(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cores_online": os.cpu_count(),
        "virtualised": "hypervisor" in flags,
        "isa": {flag: flag in flags for flag in ISA_FLAGS},
        "ram_gib": _ram_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions(distributions),
        "torch_threads": torch.get_num_threads(),
        "torch_parallel_backend": _torch_parallel_backend(),
        "threading_env": {name: os.environ.get(name) for name in THREADING_ENV},
        "load_average": load_average(),
        "energy": energy_counters(),
    }


def versions(distributions: Iterable[str]) -> dict[str, str]:
    """Installed version of each distribution, "not installed" when absent (a report must still be written)."""
    out = {}
    for dist in distributions:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: above the core count, every timing here is contended."""
    return [round(x, 2) for x in os.getloadavg()]


def energy_counters(sys_root: Path = Path("/sys")) -> dict[str, Any]:
    """Which energy or power counters this machine exposes, without reading them.

    RAPL (powercap energy_uj) and hwmon power/energy inputs are the only software-readable sources on Linux;
    VMs and containers usually hide both. With none found the answer is "not measurable here" — an energy
    figure for such a machine would have to be an estimate, and this harness does not invent one.
    """
    found = sorted(
        str(p)
        for pattern in ("class/powercap/*/energy_uj", "class/hwmon/*/energy*_input", "class/hwmon/*/power*_input")
        for p in sys_root.glob(pattern)
    )
    if found:
        return {"measurable": True, "counters": found, "note": "counters present; read them around a run"}
    return {
        "measurable": False,
        "counters": [],
        "note": "not measurable here: no RAPL (/sys/class/powercap) and no hwmon power/energy inputs",
    }


def gemm_gflops(size: int = 2048, runs: int = 10, threads: int | None = None) -> dict[str, Any]:
    """Measured fp32 GEMM rate of torch.matmul on `size`×`size` matrices: the roof "% of peak" refers to.

    A measured roof rather than a datasheet one because what matters is what this process gets on these
    (shared, possibly virtualised) cores at this moment; the median is reported as the roof so that it is
    taken under the same kind of load as the medians it divides, and the best run beside it.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen)
    b = torch.randn(size, size, generator=gen)
    out = torch.empty(size, size)
    for _ in range(2):
        torch.matmul(a, b, out=out)
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        torch.matmul(a, b, out=out)
        seconds.append(time.perf_counter() - start)
    flops = 2.0 * size**3
    return {
        "size": size,
        "runs": runs,
        "threads": torch.get_num_threads(),
        "median_gflops": round(flops / float(np.median(seconds)) / 1e9, 1),
        "best_gflops": round(flops / min(seconds) / 1e9, 1),
        "load_average": load_average(),
    }


def _torch_parallel_backend() -> str:
    for line in torch.__config__.parallel_info().splitlines():
        if line.startswith("ATen parallel backend:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _cpu_flags() -> set[str]:
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _ram_gib() -> float | None:
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
    return round(pages * page_size / 2**30, 1)
