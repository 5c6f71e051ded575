"""Device specs, the command lines of the ssh/mac/adb devices, and the adb parsers on recorded tool outputs
(tests/benchmarks/recorded/README.md says where each came from). No phone or Mac is attached here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.bench import BenchSettings
from benchmarks.devices import DeviceError, open_device
from benchmarks.devices.adb import AdbDevice, parse_getprop
from benchmarks.devices.tool_output import ToolOutputError, parse_benchmark_model, parse_executor_runner

RECORDED = Path(__file__).with_name("recorded")


def recorded(name: str) -> str:
    return (RECORDED / name).read_text()


@pytest.mark.parametrize(
    ("spec", "kind", "user", "host", "port"),
    [
        ("ssh:board", "ssh", None, "board", None),
        ("ssh:pi@10.0.0.7:2222", "ssh", "pi", "10.0.0.7", 2222),
        ("ssh:root@[::1]:22", "ssh", "root", "::1", 22),
        ("mac:me@studio.local", "mac", "me", "studio.local", None),
    ],
)
def test_host_specs(spec, kind, user, host, port):
    device = open_device(spec)
    assert (device.spec, device.kind, device.user, device.host, device.port) == (spec, kind, user, host, port)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("usb:3", "unknown device kind 'usb'"),
        ("ssh:", "expected ssh:[USER@]HOST[:PORT]"),
        ("ssh:host:99999", "expected ssh:[USER@]HOST[:PORT]"),
        ("adb:", "bad device 'adb:'"),
        ("local:x", "bad device 'local:x'"),
    ],
)
def test_bad_specs_are_one_line(spec, message):
    with pytest.raises(DeviceError, match=re.escape(message)) as err:
        open_device(spec)
    assert "\n" not in str(err.value)


def test_local_and_adb_kinds():
    assert open_device("local").kind == "local"
    adb = open_device("adb:emulator-5554")
    assert isinstance(adb, AdbDevice) and adb.serial == "emulator-5554"


def test_ssh_command_lines(tmp_path):
    device = open_device("ssh:pi@board:2200", python="/opt/venv/bin/python", ssh_config=tmp_path / "cfg")
    ssh = device.ssh_command("true")
    assert ssh[0] == "ssh" and ssh[-2:] == ["pi@board", "true"] and ssh[ssh.index("-p") + 1] == "2200"
    assert ssh[1:3] == ["-F", str(tmp_path / "cfg")] and "BatchMode=yes" in ssh and "ServerAliveInterval=5" in ssh
    scp = device.scp_to([Path("/s/runner.py"), Path("/s/a0-m.onnx")], "/tmp/x")
    assert scp[:3] == ["scp", "-q", "-r"] and scp[scp.index("-P") + 1] == "2200"
    assert scp[-3:] == ["/s/runner.py", "/s/a0-m.onnx", "pi@board:/tmp/x/"]
    assert device.scp_from("/tmp/x/out", tmp_path)[-2:] == ["pi@board:/tmp/x/out", str(tmp_path)]
    assert device.runner_command("/tmp/x y", "job", "job.json") == (
        "cd '/tmp/x y' && /opt/venv/bin/python '/tmp/x y/runner.py' job job.json"
    )


def test_mac_is_an_ssh_host_that_says_a_mac_is_needed(tmp_path):
    device = open_device("mac:127.0.0.1:1", ssh_config=tmp_path / "none", python="python3")
    (tmp_path / "none").write_text("")
    assert device.kind == "mac" and device.ssh_command("true")[-2:] == ["127.0.0.1", "true"]
    with pytest.raises(DeviceError) as err:
        device.check()
    text = str(err.value)
    assert "unreachable" in text and "a Mac is needed for Core ML" in text and "\n" not in text


def test_adb_command_lines():
    device = AdbDevice("adb:R58M", "R58M")
    settings = BenchSettings(runs=20, warmup=3, threads=2)
    bm = device.benchmark_model_command("/data/local/tmp/edgevit/a1-m.tflite", settings)
    assert bm[:4] == ["adb", "-s", "R58M", "shell"]
    assert bm[4] == (
        "/data/local/tmp/benchmark_model --graph=/data/local/tmp/edgevit/a1-m.tflite --num_threads=2 "
        "--warmup_runs=3 --warmup_min_secs=0 --num_runs=20 --min_secs=0 --use_xnnpack=true"
    )
    er = device.executor_runner_command("/data/local/tmp/edgevit/a2-m.pte", BenchSettings(runs=20, warmup=3))
    assert er[4] == (
        "/data/local/tmp/executor_runner --model_path=/data/local/tmp/edgevit/a2-m.pte --num_executions=23 "
        "--cpu_threads=-1"
    )


def test_adb_missing_says_no_phone_here():
    device = AdbDevice("adb:R58M", "R58M", adb="/nonexistent/adb")
    with pytest.raises(DeviceError, match="adb is not installed on this machine .no Android device is attached"):
        device.check()


def test_benchmark_model_with_percentiles():
    parsed = parse_benchmark_model(recorded("benchmark_model_android_aarch64.txt"))
    lat = parsed["latency"]
    assert lat["n"] == 1000 and lat["median_ms"] == pytest.approx(51.891) and lat["mean_ms"] == pytest.approx(63.7432)
    assert lat["min_ms"] == pytest.approx(49.088) and lat["max_ms"] == pytest.approx(686.105)
    assert lat["p5_ms"] == pytest.approx(49.620) and lat["p95_ms"] == pytest.approx(68.628)
    assert lat["p90_ms"] is None and lat["samples_ms"] == []  # the tool prints no per-run samples
    assert parsed["load_seconds"] == pytest.approx(0.119515) and parsed["first_inference_ms"] == pytest.approx(87.112)
    assert parsed["memory"]["added_bytes"] == int(55.4961 * 2**20)


def test_benchmark_model_older_build_without_median():
    parsed = parse_benchmark_model(recorded("benchmark_model_mi11_peak_memory.txt"))
    lat = parsed["latency"]
    assert lat["n"] == 50 and lat["median_ms"] == pytest.approx(249.684) and "median_ms is its avg" in lat["source"]
    assert lat["p5_ms"] is None and parsed["memory"]["added_bytes"] == int(138.809 * 2**20)


def test_benchmark_model_failure_is_its_last_error():
    with pytest.raises(ToolOutputError, match="^ERROR: Benchmarking failed.$"):
        parse_benchmark_model(recorded("benchmark_model_android_failed.txt"))


def test_executor_runner_iterations_drop_the_warmup():
    parsed = parse_executor_runner(recorded("executor_runner_iterations.txt"), warmup=1)
    lat = parsed["latency"]
    assert lat["n"] == 3 and lat["samples_ms"] == [1.722, 1.664, 1.69] and lat["median_ms"] == pytest.approx(1.69)
    assert parsed["load_seconds"] == pytest.approx(0.015738)


def test_executor_runner_total_only_gives_the_mean():
    parsed = parse_executor_runner(recorded("executor_runner_total_only.txt"), warmup=1)
    lat = parsed["latency"]
    assert lat["n"] == 10 and lat["mean_ms"] == pytest.approx(7.8216) and lat["samples_ms"] == []
    assert parsed["load_seconds"] is None


def test_executor_runner_failure():
    text = "E 00:00:00.000100 executorch:executor_runner.cpp:428] Failed to parse model file m.pte\n"
    with pytest.raises(ToolOutputError, match="Failed to parse model file m.pte"):
        parse_executor_runner(text, warmup=0)


def test_getprop():
    props = parse_getprop(recorded("getprop_pixel.txt"))
    assert props["ro.product.model"] == "Pixel 8" and props["ro.product.cpu.abi"] == "arm64-v8a"
