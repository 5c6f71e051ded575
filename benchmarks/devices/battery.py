"""Energy on an Android device over adb: the battery's fuel-gauge readings, sampled while the benchmark runs.

The kernel's power_supply class (Documentation/ABI/testing/sysfs-class-power) exposes
`/sys/class/power_supply/battery/current_now` in µA and `voltage_now` in µV. The ABI says negative current is
discharge, but vendors differ (many Qualcomm and Samsung kernels report discharge as positive, and a few report
mA): the sign is therefore ignored (power = |I| x V), and the unit is the ABI's — a kernel reporting mA gives a
figure 1000x low, which the raw samples kept in the results let a reader spot. Readings are only meaningful
while the battery alone powers the phone: a sample whose `status` is not "Discharging" (USB charging, full on
the charger) makes the window "not measured", with the fix (adb over Wi-Fi with the cable out, or charging
disabled). Each sample is one `adb shell cat` of the three files, stamped on this machine at the midpoint of the
call; a window's joules are the trapezoids under |I| x V. Fuel gauges update every 0.1-1 s and adb adds tens of
ms per call, so windows should be seconds long: the window and the sample count are recorded with the figure.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.energy import MeterError, Sampling

BATTERY = "/sys/class/power_supply/battery"
NOT_DISCHARGING = (
    "the battery is {status}, not discharging: the charger feeds the phone, so its battery current is not the "
    "device's draw; measure over adb on Wi-Fi (adb tcpip) with the cable out, or with charging disabled"
)


@dataclass(frozen=True)
class BatterySample:
    seconds: float  # this machine's perf_counter at the midpoint of the read
    current_a: float  # as the kernel reports it (sign convention varies; see the module docstring)
    voltage_v: float
    status: str

    @property
    def watts(self) -> float:
        return abs(self.current_a) * self.voltage_v


def read_command(adb: list[str]) -> list[str]:
    """`adb -s SERIAL shell cat current_now voltage_now status` (one round trip per sample)."""
    return [*adb, "shell", f"cat {BATTERY}/current_now {BATTERY}/voltage_now {BATTERY}/status"]


def parse_sample(text: str, seconds: float) -> BatterySample:
    """The three lines `cat` printed: µA, µV, status. MeterError naming what came back otherwise."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    try:
        current, voltage, status = int(lines[0]), int(lines[1]), lines[2]
    except (IndexError, ValueError):
        raise MeterError(f"unexpected battery readings from the device: {text.strip()[:120]!r}") from None
    return BatterySample(seconds, current / 1e6, voltage / 1e6, status)


def parse_dumpsys_battery(text: str) -> dict[str, str]:
    """`adb shell dumpsys battery`'s `key: value` lines (after its "Current Battery Service state:" header)."""
    fields: dict[str, str] = {}
    for line in text.split("Current Battery Service state:", 1)[-1].splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and line.startswith("  "):
            fields[key.strip()] = value.strip()
    return fields


def powered_by_charger(dumpsys: dict[str, str]) -> str | None:
    """Which charger feeds the phone ("USB", "AC", "Wireless"), from dumpsys battery, or None."""
    for kind in ("AC", "USB", "Wireless"):
        if dumpsys.get(f"{kind} powered") == "true":
            return kind
    return None


def integrate(samples: list[BatterySample]) -> float:
    """Joules under |I| x V between the first and last sample (trapezoids); MeterError when any sample was taken
    off battery power or there are fewer than two."""
    if len(samples) < 2:
        raise MeterError("fewer than two battery samples in the window (make the window longer)")
    for s in samples:
        if s.status != "Discharging":
            raise MeterError(NOT_DISCHARGING.format(status=s.status))
    return sum((b.seconds - a.seconds) * (a.watts + b.watts) / 2 for a, b in zip(samples, samples[1:], strict=False))


@dataclass
class AdbBatteryMeter:
    """Battery readings sampled in a thread through adb for the window (`benchmarks.energy.Meter`)."""

    adb: list[str]
    interval: float = 0.1
    name: str = "Android battery (current_now x voltage_now over adb)"
    last_samples: list[BatterySample] = field(default_factory=list, repr=False)

    def read(self) -> BatterySample:
        start = time.perf_counter()
        try:
            done = subprocess.run(read_command(self.adb), capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MeterError(f"adb did not answer ({exc})") from None
        if done.returncode != 0:
            raise MeterError(f"cannot read {BATTERY} ({(done.stderr.strip() or done.stdout.strip())[:120]})")
        return parse_sample(done.stdout, (start + time.perf_counter()) / 2)

    def begin(self) -> Sampling:
        return Sampling(self.read, self.interval)

    def end(self, token: Sampling) -> float:
        samples = token.close()
        self.last_samples = samples
        return integrate(samples)


def measure_tool_energy(meter: AdbBatteryMeter, run_tool: Any, inferences: int, idle_seconds: float) -> dict:
    """Idle window, then the tool's whole run as the active window: joules per inference with the idle power
    subtracted (the window includes the tool's model load and warm-up, so the figure is an upper bound; said
    in `window`). "not measured" with the reason when the meter fails; the tool's result is returned either way."""
    from benchmarks.energy import idle_window, joules_per_inference

    try:
        idle_joules, idle_elapsed = idle_window(meter, idle_seconds)
        token = meter.begin()
    except MeterError as exc:
        return {"energy": {"measured": False, "reason": f"not measured: {exc}"}, "result": run_tool()}
    start = time.perf_counter()
    result = run_tool()
    elapsed = time.perf_counter() - start
    try:
        active_joules = meter.end(token)
    except MeterError as exc:
        return {"energy": {"measured": False, "reason": f"not measured: {exc}"}, "result": result}
    energy = {
        "meter": meter.name,
        **joules_per_inference(idle_joules, idle_elapsed, active_joules, elapsed, inferences),
        "window": "the whole benchmark binary run (load, warm-up and timed runs): an upper bound per inference",
        "samples": len(meter.last_samples),
    }
    return {"energy": energy, "result": result}
