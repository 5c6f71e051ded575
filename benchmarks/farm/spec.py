"""`farm.toml`: the devices of a farm, how every job is benched, how often a job is tried, and where it runs.

```toml
attempts = 3          # tries per job before it is recorded failed (a device that drops is retried)
backoff_s = 2.0       # wait before try k+1: backoff_s * 2**(k-1)
ray = false           # true: the cluster in RAY_ADDRESS, else the one `ray start --head` runs here; or "HOST:PORT"
wait_s = 60           # on Ray: how long a job waits for a live node offering its device before the try fails

[bench]               # the settings of every job (`edgevit bench` flags)
runs = 20
warmup = 3
threads = 1
targets = ["onnx", "tflite"]

[[device]]
spec = "local"

[[device]]
spec = "ssh:pi@board1:2222"
name = "board1"       # default: the spec; names the job and the Ray resource ("device:board1")
attempts = 5          # this device's own attempts / backoff_s
options = { python = "/opt/edgevit/bin/python" }   # kind-specific: `benchmarks.devices.open_device` options
```

Every problem is one `FarmError` line naming the key, so a typo never silently changes what runs.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.bench import BenchSettings
from benchmarks.devices import KINDS
from benchmarks.farm.errors import FarmError
from converters.errors import ConversionError
from converters.targets.registry import resolve_targets

TOP_KEYS = {"attempts", "backoff_s", "ray", "wait_s", "bench", "device"}
DEVICE_KEYS = {"spec", "name", "attempts", "backoff_s", "options"}
BENCH_KEYS = {"runs", "warmup", "threads", "targets"}


@dataclass(frozen=True)
class DeviceEntry:
    """One device of the farm: its spec, the name jobs and the Ray resource use, and its retry policy."""

    name: str
    spec: str
    attempts: int = 3
    backoff_s: float = 2.0
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.spec.split(":", 1)[0]

    @property
    def resource(self) -> str:
        """The Ray custom resource a host offers for this device (`ray start --resources '{"device:N": 1}'`)."""
        return f"device:{self.name}"


@dataclass(frozen=True)
class FarmSpec:
    devices: tuple[DeviceEntry, ...]
    settings: BenchSettings
    ray: str | bool = False
    wait_s: float = 60.0

    @classmethod
    def from_toml(cls, path: Path) -> FarmSpec:
        try:
            table = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise FarmError(f"cannot read farm file {path}: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise FarmError(f"{path} is not valid TOML ({exc})") from None
        return cls.from_table(table, str(path))

    @classmethod
    def from_table(cls, table: dict[str, Any], where: str = "farm.toml") -> FarmSpec:
        unknown(table, TOP_KEYS, where, "")
        attempts = integer(table.get("attempts", 3), f"{where}: attempts", 1)
        backoff = number(table.get("backoff_s", 2.0), f"{where}: backoff_s")
        ray = table.get("ray", False)
        if not isinstance(ray, bool | str) or ray == "":
            raise FarmError(f"{where}: ray must be true, false or a cluster address HOST:PORT, not {ray!r}")
        devices = table.get("device")
        if not isinstance(devices, list) or not devices or not all(isinstance(d, dict) for d in devices):
            raise FarmError(f'{where} names no device; add one or more [[device]] tables with spec = "local"')
        entries = tuple(device_entry(d, i, where, attempts, backoff) for i, d in enumerate(devices))
        names = [e.name for e in entries]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise FarmError(f"{where}: device name {dupes[0]!r} is used twice; give each [[device]] its own name")
        wait = number(table.get("wait_s", 60.0), f"{where}: wait_s")
        return cls(entries, bench_settings(table.get("bench", {}), where), ray, wait)


def device_entry(d: dict[str, Any], i: int, where: str, attempts: int, backoff: float) -> DeviceEntry:
    at = f"{where}: device[{i}]"
    unknown(d, DEVICE_KEYS, where, f"device[{i}].")
    spec = d.get("spec")
    if not isinstance(spec, str) or not spec:
        raise FarmError(f'{at} has no spec; write e.g. spec = "local" or spec = "ssh:HOST"')
    kind = spec.split(":", 1)[0]
    if kind not in KINDS:
        raise FarmError(f"{at}: unknown device kind {kind!r} in {spec!r}; valid kinds: {', '.join(KINDS)}")
    name = d.get("name", spec)
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise FarmError(f"{at}: name must be a non-empty string without spaces, not {name!r}")
    options = d.get("options", {})
    if not isinstance(options, dict):
        raise FarmError(f'{at}: options must be a table, e.g. options = {{ python = "/usr/bin/python3" }}')
    return DeviceEntry(
        name,
        spec,
        integer(d.get("attempts", attempts), f"{at}.attempts", 1),
        number(d.get("backoff_s", backoff), f"{at}.backoff_s"),
        options,
    )


def bench_settings(bench: Any, where: str) -> BenchSettings:
    if not isinstance(bench, dict):
        raise FarmError(f"{where}: [bench] must be a table (runs, warmup, threads, targets)")
    unknown(bench, BENCH_KEYS, where, "bench.")
    targets = bench.get("targets")
    if targets is not None and (
        not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t for t in targets)
    ):
        raise FarmError(f'{where}: bench.targets must be a list of target names, e.g. ["onnx", "tflite"]')
    threads = bench.get("threads")
    return BenchSettings(
        runs=integer(bench.get("runs", 20), f"{where}: bench.runs", 1),
        warmup=integer(bench.get("warmup", 3), f"{where}: bench.warmup", 0),
        threads=None if threads is None else integer(threads, f"{where}: bench.threads", 1),
        targets=known_targets(targets, where) if targets else None,
    )


def known_targets(targets: list[str], where: str) -> tuple[str, ...]:
    try:
        return resolve_targets(",".join(targets))
    except ConversionError as exc:
        raise FarmError(f"{where}: bench.targets: {exc}") from None


def unknown(table: dict[str, Any], known: set[str], where: str, prefix: str) -> None:
    if extra := sorted(set(table) - known):
        raise FarmError(f"{where}: unknown key {prefix}{extra[0]}; known keys: {', '.join(sorted(known))}")


def integer(value: Any, what: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise FarmError(f"{what} must be an integer >= {least}, not {value!r}")
    return value


def number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
        raise FarmError(f"{what} must be a number of seconds in [0, 3600], not {value!r}")
    return float(value)
