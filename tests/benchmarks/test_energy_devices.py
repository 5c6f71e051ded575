"""Energy meters of devices not attached here: macOS powermetrics and an Android battery over adb. Their command
lines, and their parsers on recorded outputs of the real tools (tests/benchmarks/recorded/README.md says which
are recorded and which reconstructed); the integration worked out by hand; a missing tool said plainly."""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

import pytest

from benchmarks.devices.adb import AdbDevice
from benchmarks.devices.battery import (
    BatterySample,
    integrate,
    parse_dumpsys_battery,
    parse_sample,
    powered_by_charger,
    read_command,
)
from benchmarks.energy import (
    MeterError,
    PowermetricsMeter,
    find_meters,
    parse_powermetrics,
    powermetrics_command,
    powermetrics_joules,
)

RECORDED = Path(__file__).parent / "recorded"


def test_powermetrics_command_samples_the_soc_rails_through_sudo_without_a_prompt():
    assert powermetrics_command(200, 15) == [
        "sudo", "-n", "powermetrics", "--samplers", "cpu_power,gpu_power,ane_power", "-i", "200", "-n", "15",
        "-b", "1",
    ]  # fmt: skip


def test_powermetrics_output_of_an_m2_mac():
    samples = parse_powermetrics((RECORDED / "powermetrics_mac14_2.txt").read_text())
    assert samples == [
        {"elapsed_s": pytest.approx(1.0029), "cpu": 0.823, "gpu": 0.026, "ane": 0.323, "combined": 1.172},
        {"elapsed_s": pytest.approx(1.01009), "cpu": 0.205, "gpu": 0.019, "ane": 0.221, "combined": 0.445},
    ]
    # a 3 s window: the samples' elapsed-weighted mean power times the window
    mean_watts = (1.172 * 1.0029 + 0.445 * 1.01009) / (1.0029 + 1.01009)
    assert powermetrics_joules(samples, 3.0) == pytest.approx(mean_watts * 3.0)


def test_powermetrics_cut_mid_sample_and_other_builds():
    text = (RECORDED / "powermetrics_mac14_2.txt").read_text()
    cut = text[: text.rindex("CPU Power: 205 mW")]  # stopped while writing the second sample
    assert [s["combined"] for s in parse_powermetrics(cut)] == [1.172]
    # RECONSTRUCTED lines: a build without the Combined line (summed), and an Intel Mac's package power in W
    no_combined = "*** Sampled system activity (x) (500.00ms elapsed) ***\nCPU Power: 1.5 W\nGPU Power: 250 mW\n"
    assert parse_powermetrics(no_combined) == [{"elapsed_s": 0.5, "cpu": 1.5, "gpu": 0.25, "combined": 1.75}]
    intel = "*** Sampled system activity (x) (1000.10ms elapsed) ***\n" + (
        "Intel energy model derived package power (CPUs+GT+SA): 2.48W\n"
    )
    assert parse_powermetrics(intel)[0]["combined"] == 2.48
    with pytest.raises(MeterError, match="no complete sample"):
        powermetrics_joules(parse_powermetrics("Machine model: Mac14,2\n"), 1.0)


@pytest.mark.skipif(platform.system() == "Darwin", reason="powermetrics exists on macOS")
def test_powermetrics_missing_is_a_meter_error_and_not_looked_for_off_macos(tmp_path):
    meter = PowermetricsMeter(interval_ms=50)
    with pytest.raises(MeterError, match="powermetrics"):
        meter.end(meter.begin())
    meters, why = find_meters(tmp_path)  # an empty sysfs on Linux: powermetrics is not consulted
    assert meters == [] and "powermetrics" not in why


def test_battery_read_command_and_sample():
    assert read_command(["adb", "-s", "R58M"]) == [
        "adb", "-s", "R58M", "shell",
        "cat /sys/class/power_supply/battery/current_now /sys/class/power_supply/battery/voltage_now "
        "/sys/class/power_supply/battery/status",
    ]  # fmt: skip
    sample = parse_sample("-452000\n3964000\nDischarging\n", 1.5)  # RECONSTRUCTED from the sysfs ABI
    assert sample == BatterySample(1.5, -0.452, 3.964, "Discharging")
    assert sample.watts == pytest.approx(0.452 * 3.964)  # the sign is ignored: vendors differ
    with pytest.raises(MeterError, match="unexpected battery readings"):
        parse_sample("cat: /sys/class/power_supply/battery/current_now: Permission denied\n", 0.0)


def test_dumpsys_battery_of_a_phone_on_usb():
    fields = parse_dumpsys_battery((RECORDED / "dumpsys_battery_usb.txt").read_text())
    assert fields["USB powered"] == "true" and fields["voltage"] == "4352" and fields["status"] == "5"
    assert powered_by_charger(fields) == "USB"
    assert powered_by_charger({**fields, "USB powered": "false"}) is None


def test_battery_energy_is_the_area_under_current_times_voltage():
    samples = [
        BatterySample(0.0, -0.5, 4.0, "Discharging"),  # 2 W
        BatterySample(1.0, -1.0, 4.0, "Discharging"),  # 4 W
        BatterySample(3.0, 0.5, 4.0, "Discharging"),  # 2 W (a vendor reporting discharge as positive)
    ]
    assert integrate(samples) == pytest.approx((2 + 4) / 2 * 1.0 + (4 + 2) / 2 * 2.0)  # 9 J
    with pytest.raises(MeterError, match="Charging, not discharging"):
        integrate([*samples, BatterySample(4.0, 0.9, 4.2, "Charging")])
    with pytest.raises(MeterError, match="fewer than two"):
        integrate(samples[:1])


def test_no_adb_means_energy_not_measured_with_the_reason():
    assert shutil.which("/nonexistent/adb") is None
    meter, energy = AdbDevice("adb:R58M", "R58M", adb="/nonexistent/adb").battery_meter()
    assert meter is None and energy["measured"] is False and energy["reason"].startswith("not measured: adb")
