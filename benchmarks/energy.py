"""Energy from real meters: joules per inference with the idle baseline subtracted, or "not measured" and why.

Linux exposes two software-readable sources:
- RAPL (`/sys/class/powercap/intel-rapl:N/energy_uj`): a cumulative package counter in µJ that wraps at
  `max_energy_range_uj`. Only top-level package zones are summed (`intel-rapl:N`, not `intel-rapl:N:M`, whose
  core/uncore/dram energy the package already holds or a separate rail measures; psys would double count).
  Since Linux 5.10 the file is root-only (the PLATYPUS side channel), which is said rather than guessed around.
- hwmon (`/sys/class/hwmon/hwmonN/`): `energyK_input` (cumulative µJ) or `powerK_input` (instantaneous µW,
  e.g. an INA219-class sensor on a board), which is sampled in a thread and integrated (trapezoids).

macOS has no sysfs: `powermetrics --samplers cpu_power,gpu_power,ane_power -i N` (root: run through `sudo -n`,
so a password prompt is a "not measured" reason, never a hang) prints, every N ms, a block headed
`*** Sampled system activity (DATE) (X ms elapsed) ***` holding `CPU Power: N mW`, `GPU Power: N mW`,
`ANE Power: N mW` and `Combined Power (CPU + GPU + ANE): N mW` (Apple silicon; Intel Macs print `Intel energy
model derived package power (CPUs+GT+SA): N W`). A window's joules are its complete samples' mean power
(weighted by each sample's elapsed time) times the window's wall time; the SoC's rails only (no DRAM, display,
disk), as powermetrics reports them. This file is copied beside the board runner on ssh/mac hosts, so it imports
nothing but the standard library.

A measurement is two windows: an idle one (nothing runs) gives the baseline power, then an active one runs the
model back to back; joules per inference = (active energy - baseline power x active time) / inferences. Both
windows and the baseline are recorded beside the figure. A machine with no meter gets {"measured": False,
"reason": ...} — never an estimate.
"""

from __future__ import annotations

import platform
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

NO_METER = (
    "not measured: no energy meter here (no RAPL zone in /sys/class/powercap, "
    "no hwmon energy*_input or power*_input in /sys/class/hwmon)"
)


class MeterError(RuntimeError):
    """A meter that was found but could not be read (vanished, unreadable, garbage)."""


class Meter(Protocol):
    """Energy over a window: `begin()` returns a token, `end(token)` the joules spent since."""

    name: str

    def begin(self) -> Any: ...

    def end(self, token: Any) -> float: ...


def read_int(path: Path) -> int:
    """One integer sysfs value; MeterError naming the file when it is missing, unreadable or not a number."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise MeterError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def counter_delta(before: int, after: int, max_range: int | None) -> int:
    """`after - before` of a counter that wraps to 0 past `max_range` (one wrap at most: keep windows short)."""
    if after >= before:
        return after - before
    if not max_range:
        raise MeterError(f"counter went backwards ({before} -> {after}) and its wrap range is unknown")
    return after + max_range - before


@dataclass(frozen=True)
class CounterFile:
    """One cumulative µJ counter file and the value it wraps at (None: no wrap known, e.g. hwmon's 64-bit)."""

    path: Path
    max_range: int | None


@dataclass
class CounterMeter:
    """A sum of cumulative µJ counters (RAPL package zones, or hwmon energy inputs)."""

    name: str
    counters: list[CounterFile]

    def begin(self) -> list[int]:
        return [read_int(c.path) for c in self.counters]

    def end(self, token: list[int]) -> float:
        after = [read_int(c.path) for c in self.counters]
        total = sum(counter_delta(b, a, c.max_range) for b, a, c in zip(token, after, self.counters, strict=True))
        return total / 1e6


class Sampling:
    """Readings of one meter taken every `interval` seconds in a thread over a window, the first and the last on
    the caller's thread, so even a window shorter than the interval has two; a reading that fails ends the
    sampling and is raised when the window closes (one bad read must not be integrated as zero watts)."""

    def __init__(self, read: Callable[[], Any], interval: float) -> None:
        self.read, self.interval = read, interval
        self.samples = [read()]
        self._errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(self.read())
            except MeterError as exc:
                self._errors.append(exc)
                return

    def close(self) -> list[Any]:
        self._stop.set()
        self._thread.join()
        if self._errors:
            raise self._errors[0]
        self.samples.append(self.read())
        return self.samples


@dataclass
class PowerMeter:
    """hwmon power inputs (µW), sampled every `interval` seconds in a thread and integrated over the window."""

    name: str
    paths: list[Path]
    interval: float = 0.01

    def _sample(self) -> tuple[float, float]:
        return time.perf_counter(), sum(read_int(p) for p in self.paths) / 1e6

    def begin(self) -> Sampling:
        return Sampling(self._sample, self.interval)

    def end(self, token: Sampling) -> float:
        samples = token.close()
        return sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in zip(samples, samples[1:], strict=False))


POWERMETRICS_SAMPLERS = "cpu_power,gpu_power,ane_power"
_PM_HEADER = re.compile(r"^\*\*\* Sampled system activity \((.*?)\) \(([\d.]+)ms elapsed\) \*\*\*", re.M)
_PM_POWER = re.compile(
    r"^(CPU Power|GPU Power|ANE Power|Combined Power \(CPU \+ GPU \+ ANE\)|"
    r"Intel energy model derived package power \(CPUs\+GT\+SA\)): *([\d.]+) *(mW|W)\s*$",
    re.M,
)


def powermetrics_command(interval_ms: int = 100, count: int = 0) -> list[str]:
    """powermetrics sampling the SoC's power rails every `interval_ms` (count 0: until stopped), through
    `sudo -n` (it needs root; -n fails at once instead of prompting), output line-buffered."""
    return ["sudo", "-n", "powermetrics", "--samplers", POWERMETRICS_SAMPLERS, "-i", str(interval_ms),
            "-n", str(count), "-b", "1"]  # fmt: skip


def parse_powermetrics(text: str) -> list[dict[str, float]]:
    """Every complete sample of powermetrics' text output: elapsed seconds and watts per rail (cpu, gpu, ane,
    combined; `combined` is the sum of the others where the build prints no Combined line, or the Intel
    package power). A block cut off before any power line (the sample being written when it was stopped) is
    left out."""
    heads = list(_PM_HEADER.finditer(text))
    samples = []
    for head, after in zip(heads, [*heads[1:], None], strict=False):
        block = text[head.end() : after.start() if after else len(text)]
        rails = {}
        for name, value, unit in _PM_POWER.findall(block):
            key = "combined" if name.startswith(("Combined", "Intel")) else name.split()[0].lower()
            rails[key] = float(value) / (1e3 if unit == "mW" else 1.0)
        if not rails:
            continue
        if "combined" not in rails:
            rails["combined"] = sum(rails.values())
        samples.append({"elapsed_s": float(head.group(2)) / 1e3, **rails})
    return samples


def powermetrics_joules(samples: list[dict[str, float]], window_s: float) -> float:
    """Energy of a window of `window_s` seconds from its samples: elapsed-weighted mean combined power x time."""
    total = sum(s["elapsed_s"] for s in samples)
    if not samples or total <= 0:
        raise MeterError("powermetrics printed no complete sample in the window (make the window longer)")
    return sum(s["combined"] * s["elapsed_s"] for s in samples) / total * window_s


@dataclass
class PowermetricsMeter:
    """macOS powermetrics run for the window (module docstring), its text parsed when the window ends."""

    name: str = "powermetrics (CPU + GPU + ANE)"
    interval_ms: int = 100

    def begin(self) -> tuple[subprocess.Popen, Any, float]:
        out = tempfile.TemporaryFile(mode="w+")
        try:
            proc = subprocess.Popen(
                powermetrics_command(self.interval_ms), stdout=out, stderr=subprocess.PIPE, text=True
            )
        except OSError as exc:
            out.close()
            raise MeterError(f"cannot start powermetrics through sudo ({exc.strerror or exc})") from None
        return proc, out, time.perf_counter()

    def end(self, token: tuple[subprocess.Popen, Any, float]) -> float:
        proc, out, start = token
        window = time.perf_counter() - start
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # sudo relays it; powermetrics exits between samples
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        out.seek(0)
        text = out.read()
        out.close()
        samples = parse_powermetrics(text)
        if not samples:
            raise MeterError(f"powermetrics gave no sample ({(err or text).strip().splitlines()[-1:] or 'no output'})")
        return powermetrics_joules(samples, window)


def _powermetrics_usable() -> str | None:
    """None when powermetrics runs here without a password, else why not."""
    if platform.system() != "Darwin":
        return "not macOS"
    try:
        done = subprocess.run(powermetrics_command(100, 1), capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"powermetrics did not run ({exc})"
    if done.returncode != 0 or not parse_powermetrics(done.stdout):
        why = (done.stderr.strip().splitlines() or ["no sample printed"])[-1]
        return f"powermetrics needs root without a password prompt (sudoers NOPASSWD for powermetrics): {why}"
    return None


def find_meters(sys_root: Path = Path("/sys")) -> tuple[list[Meter], str | None]:
    """The meters this machine exposes (RAPL first, then hwmon energy, then hwmon power), and why none can be
    used when the list is empty. A meter is kept only if every file of it reads now."""
    meters: list[Meter] = []
    problems: list[str] = []
    rapl = sorted(p for p in (sys_root / "class" / "powercap").glob("*") if re.fullmatch(r"intel-rapl:\d+", p.name))
    if rapl:
        counters = [CounterFile(z / "energy_uj", _max_range(z / "max_energy_range_uj")) for z in rapl]
        meters.append(CounterMeter("RAPL " + "+".join(_zone_name(z) for z in rapl), counters))
    for hwmon in sorted((sys_root / "class" / "hwmon").glob("*")):
        label = _hwmon_name(hwmon)
        if energy := sorted(hwmon.glob("energy*_input")):
            meters.append(CounterMeter(f"hwmon {label} energy", [CounterFile(p, None) for p in energy]))
        elif power := sorted(hwmon.glob("power*_input")):
            meters.append(PowerMeter(f"hwmon {label} power", power))
    usable = []
    for meter in meters:
        try:
            meter.end(meter.begin())
        except MeterError as exc:
            problems.append(f"{meter.name} present but unreadable ({exc}; RAPL is root-only since Linux 5.10)")
            continue
        usable.append(meter)
    if not usable and platform.system() == "Darwin":
        why = _powermetrics_usable()
        if why is None:
            return [PowermetricsMeter()], None
        problems.append(why)
    if usable:
        return usable, None
    return [], ("not measured: " + "; ".join(problems)) if problems else NO_METER


def joules_per_inference(
    idle_joules: float, idle_seconds: float, active_joules: float, active_seconds: float, inferences: int
) -> dict[str, Any]:
    """The figure and everything it was made from: baseline power (idle window), the active window, the count."""
    idle_watts = idle_joules / idle_seconds
    net = active_joules - idle_watts * active_seconds
    return {
        "measured": True,
        "joules_per_inference": net / inferences,
        "inferences": inferences,
        "active_window_s": active_seconds,
        "active_joules": active_joules,
        "idle_window_s": idle_seconds,
        "idle_watts": idle_watts,
        "net_watts": net / active_seconds,
    }


def idle_window(meter: Meter, seconds: float) -> tuple[float, float]:
    """(joules, seconds) the meter counts while nothing runs: the baseline every figure subtracts."""
    token = meter.begin()
    start = time.perf_counter()
    time.sleep(seconds)
    return meter.end(token), time.perf_counter() - start


def measure_energy(
    meter: Meter, run_once: Callable[[], Any], *, idle_seconds: float = 1.0, window_seconds: float = 2.0
) -> dict[str, Any]:
    """Idle window of `idle_seconds`, then `run_once` back to back for at least `window_seconds`; see the module
    docstring. A meter that fails mid-run gives "not measured" with the reason, never a partial figure."""
    try:
        idle_joules, idle_elapsed = idle_window(meter, idle_seconds)
        token = meter.begin()
        start, count = time.perf_counter(), 0
        while time.perf_counter() - start < window_seconds or count == 0:
            run_once()
            count += 1
        active_joules = meter.end(token)
        elapsed = time.perf_counter() - start
    except MeterError as exc:
        return {"measured": False, "meter": meter.name, "reason": f"not measured: {meter.name} failed mid-run ({exc})"}
    return {"meter": meter.name, **joules_per_inference(idle_joules, idle_elapsed, active_joules, elapsed, count)}


def _max_range(path: Path) -> int | None:
    try:
        return read_int(path)
    except MeterError:
        return None


def _zone_name(zone: Path) -> str:
    try:
        return zone.joinpath("name").read_text().strip() or zone.name
    except OSError:
        return zone.name


def _hwmon_name(hwmon: Path) -> str:
    try:
        return f"{hwmon.name} ({hwmon.joinpath('name').read_text().strip()})"
    except OSError:
        return hwmon.name
