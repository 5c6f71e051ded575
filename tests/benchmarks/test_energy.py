"""Energy meters read from sysfs trees written here in the layout the kernel uses (powercap RAPL zones, hwmon
inputs): wrap-around, sub-zones left out, power integrated over time, a missing or failing meter said plainly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from benchmarks.energy import (
    NO_METER,
    CounterMeter,
    MeterError,
    PowerMeter,
    counter_delta,
    find_meters,
    joules_per_inference,
    measure_energy,
)

MAX_RANGE = 262_143_328_850  # max_energy_range_uj as a Xeon's package zone reports it


def rapl_tree(root: Path, package_uj: int) -> Path:
    """/sys/class/powercap with one package zone and its core sub-zone (which must not be added again)."""
    zone = root / "class" / "powercap" / "intel-rapl:0"
    (zone / "intel-rapl:0:0").mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text(f"{package_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{MAX_RANGE}\n")
    (zone / "intel-rapl:0:0" / "energy_uj").write_text("5\n")
    (root / "class" / "powercap" / "intel-rapl:0:0").symlink_to(zone / "intel-rapl:0:0")
    return zone / "energy_uj"


def test_rapl_counter_wraps_around_and_sub_zones_are_not_added(tmp_path):
    counter = rapl_tree(tmp_path, MAX_RANGE - 100)
    meters, why = find_meters(tmp_path)
    assert why is None and [m.name for m in meters] == ["RAPL package-0"]
    token = meters[0].begin()
    counter.write_text("50\n")  # the counter passed max_energy_range_uj and restarted from 0
    assert meters[0].end(token) == pytest.approx(150e-6)


def test_counter_delta_without_a_known_range_refuses_a_backwards_counter():
    assert counter_delta(10, 30, None) == 20
    with pytest.raises(MeterError, match="backwards"):
        counter_delta(30, 10, None)


def test_hwmon_energy_counter_and_power_input(tmp_path):
    energy = tmp_path / "class" / "hwmon" / "hwmon0"
    power = tmp_path / "class" / "hwmon" / "hwmon1"
    for folder, name in ((energy, "amd_energy"), (power, "ina219")):
        folder.mkdir(parents=True)
        (folder / "name").write_text(name + "\n")
    (energy / "energy1_input").write_text("1000\n")
    (power / "power1_input").write_text("2000000\n")  # 2 W, in µW
    meters, why = find_meters(tmp_path)
    assert why is None
    assert [type(m) for m in meters] == [CounterMeter, PowerMeter]
    token = meters[0].begin()
    (energy / "energy1_input").write_text("4000\n")
    assert meters[0].end(token) == pytest.approx(3000e-6)
    start = time.perf_counter()
    token = meters[1].begin()
    time.sleep(0.05)
    joules = meters[1].end(token)
    assert joules == pytest.approx(2.0 * (time.perf_counter() - start), rel=0.2)  # 2 W held over the window


def test_no_meter_is_not_measured_with_the_reason(tmp_path):
    assert find_meters(tmp_path) == ([], NO_METER)
    assert NO_METER.startswith("not measured")


def test_an_unreadable_meter_is_named_not_used(tmp_path):
    counter = rapl_tree(tmp_path, 0)
    counter.write_text("permission denied?\n")
    meters, why = find_meters(tmp_path)
    assert meters == [] and why.startswith("not measured: RAPL package-0 present but unreadable")


def test_measure_subtracts_nothing_when_idle_is_flat_and_counts_every_call(tmp_path):
    counter = rapl_tree(tmp_path, 1_000)
    meter = find_meters(tmp_path)[0][0]
    value = [1_000]

    def run_once() -> None:  # each inference costs 250 µJ on this recorded counter
        value[0] += 250
        counter.write_text(f"{value[0]}\n")

    result = measure_energy(meter, run_once, idle_seconds=0.01, window_seconds=0.02)
    assert result["measured"] and result["idle_watts"] == 0.0
    assert result["joules_per_inference"] == pytest.approx(250e-6)
    assert result["active_joules"] == pytest.approx(250e-6 * result["inferences"])


def test_idle_baseline_is_subtracted():
    result = joules_per_inference(
        idle_joules=2.0, idle_seconds=1.0, active_joules=10.0, active_seconds=2.0, inferences=100
    )
    assert result["idle_watts"] == 2.0
    assert result["joules_per_inference"] == pytest.approx(0.06)  # (10 J - 2 W x 2 s) / 100
    assert result["net_watts"] == pytest.approx(3.0)


def test_a_meter_lost_mid_run_gives_no_figure(tmp_path):
    counter = rapl_tree(tmp_path, 1_000)
    meter = find_meters(tmp_path)[0][0]
    result = measure_energy(meter, counter.unlink, idle_seconds=0.0, window_seconds=0.0)
    assert result["measured"] is False and "failed mid-run" in result["reason"]
    assert "joules_per_inference" not in result
