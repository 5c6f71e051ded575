"""`adb:SERIAL`: an Android device through adb, benched with the runtimes' own benchmark binaries.

.tflite artifacts run under LiteRT's `benchmark_model` and .pte ones under ExecuTorch's `executor_runner`, both
pushed beforehand by the user to `/data/local/tmp` (their paths are options); the artifact is pushed, the tool
run with the settings' runs, warm-up and threads, and its documented output parsed (`tool_output`). The tools
feed their own inputs (random for benchmark_model, all ones for executor_runner) and do not hand outputs back
here, so such rows carry timing and the tool's memory figure but no fidelity, and say so. Other targets get a
"not run" row. No phone is attached to the machine this was written on: the command lines and the parsers are
tested (on recorded outputs of the real tools), and `check()` says plainly when adb or the device is missing.

Energy: when the phone runs on its battery (not charging over the cable), its fuel gauge is sampled through adb
during an idle window and during each tool run (`battery.py`); otherwise every row says why not.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.bench import BenchSettings, Progress, base_row, chosen_artifacts, results_document
from benchmarks.devices.base import BenchInputs, DeviceError, DeviceLost, label_of
from benchmarks.devices.battery import NOT_DISCHARGING, AdbBatteryMeter, measure_tool_energy
from benchmarks.devices.tool_output import ToolOutputError, parse_benchmark_model, parse_executor_runner
from benchmarks.energy import MeterError
from converters.bundle import read_manifest

PROPS = {
    "ro.product.manufacturer": "manufacturer",
    "ro.product.model": "model",
    "ro.soc.model": "soc",
    "ro.product.cpu.abi": "architecture",
    "ro.build.version.release": "android",
    "ro.build.version.sdk": "sdk",
}
NO_FIDELITY = "not compared: the benchmark binaries run their own inputs and do not return outputs"


@dataclass
class AdbDevice:
    spec: str
    serial: str
    adb: str = "adb"
    remote_dir: str = "/data/local/tmp/edgevit"
    benchmark_model: str = "/data/local/tmp/benchmark_model"
    executor_runner: str = "/data/local/tmp/executor_runner"
    kind: str = "adb"

    def command(self, *args: str) -> list[str]:
        return [self.adb, "-s", self.serial, *args]

    def benchmark_model_command(self, model: str, settings: BenchSettings) -> list[str]:
        """benchmark_model with exactly the settings' counts (min_secs 0: no extra runs to fill a duration)."""
        return self.command("shell", shlex.join([
            self.benchmark_model, f"--graph={model}", f"--num_threads={settings.threads or -1}",
            f"--warmup_runs={settings.warmup}", "--warmup_min_secs=0", f"--num_runs={settings.runs}", "--min_secs=0",
            "--use_xnnpack=true",
        ]))  # fmt: skip

    def executor_runner_command(self, model: str, settings: BenchSettings) -> list[str]:
        """executor_runner has no warm-up flag: it runs warm-up + runs executions and the parser drops the first."""
        return self.command("shell", shlex.join([
            self.executor_runner, f"--model_path={model}", f"--num_executions={settings.warmup + settings.runs}",
            f"--cpu_threads={settings.threads or -1}",
        ]))  # fmt: skip

    def _run(self, command: list[str], timeout: float = 3600) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except FileNotFoundError:
            raise DeviceError(
                f"{self.spec}: adb is not installed on this machine (no Android device is attached here); "
                "install platform-tools and connect the device"
            ) from None
        except subprocess.TimeoutExpired:
            raise DeviceLost(f"{self.spec} did not answer within {timeout:.0f} s") from None

    def check(self) -> None:
        done = self._run(self.command("get-state"), timeout=30)
        if done.returncode != 0 or done.stdout.strip() != "device":
            why = (done.stderr.strip().splitlines() or [done.stdout.strip() or "not found"])[-1]
            raise DeviceError(f"{self.spec} is not attached ({why}); see `adb devices`")

    def describe(self) -> dict[str, Any]:
        done = self._run(self.command("shell", "getprop"), timeout=30)
        props = parse_getprop(done.stdout)
        cores = self._run(self.command("shell", "nproc"), timeout=30).stdout.strip()
        return {
            "hostname": self.serial,
            **{name: props.get(key) for key, name in PROPS.items()},
            "cpu_model": props.get("ro.soc.model") or props.get("ro.hardware"),
            "cores_online": int(cores) if cores.isdigit() else None,
            "os": f"Android {props.get('ro.build.version.release')} (SDK {props.get('ro.build.version.sdk')})",
        }

    def bench(
        self, bundle: Path, settings: BenchSettings, progress: Progress | None = None, inputs: BenchInputs | None = None
    ) -> dict[str, Any]:
        bundle = Path(bundle)
        manifest = read_manifest(bundle)
        chosen = chosen_artifacts(bundle, manifest, settings)
        self.check()
        self._run(self.command("shell", f"mkdir -p {shlex.quote(self.remote_dir)}"), timeout=60)
        meter, energy = self.battery_meter()
        rows = []
        for i, art in chosen:
            row = base_row(art)
            if art["target"] not in ("tflite", "executorch"):
                rows.append({**row, "status": "not run", "reason": f"no {art['target']} benchmark binary on adb"})
                continue
            if progress:
                progress(label_of(art), 0, settings.runs)
            rows.append({**row, **self.bench_one(bundle, art, i, settings, meter, energy)})
            if progress:
                progress(label_of(art), settings.runs, settings.runs)
        for row in rows:
            row["fidelity"] = {"note": NO_FIDELITY if row["status"] == "ok" else row["reason"]}
        overhead = {"measured": False, "summary": "the binaries time themselves"}
        note = "the benchmark binaries' own inputs (benchmark_model: random; executor_runner: all ones)"
        doc = results_document(bundle, manifest, settings, note, self.spec, self.describe(), energy, overhead, rows)
        doc["device_note"] = (
            f"run on {self.serial} over adb with LiteRT's benchmark_model / ExecuTorch's executor_runner"
        )
        return doc

    def battery_meter(self) -> tuple[AdbBatteryMeter | None, dict[str, Any]]:
        """The phone's battery meter when it reads and the phone runs on battery, else None and why not."""
        meter = AdbBatteryMeter(self.command())
        try:
            status = meter.read().status
        except MeterError as exc:
            return None, {"measured": False, "reason": f"not measured: {exc}"}
        if status != "Discharging":
            return None, {"measured": False, "reason": "not measured: " + NOT_DISCHARGING.format(status=status)}
        return meter, {"measured": True, "meters": [meter.name]}

    def bench_one(
        self,
        bundle: Path,
        art: dict[str, Any],
        index: int,
        settings: BenchSettings,
        meter: AdbBatteryMeter | None = None,
        energy: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        remote = f"{self.remote_dir}/a{index}-{Path(art['path']).name}"
        pushed = self._run(self.command("push", str(bundle / art["path"]), remote))
        if pushed.returncode != 0:
            raise DeviceLost(f"{self.spec} lost while pushing {art['path']} ({pushed.stderr.strip()[-200:]})")
        tool = self.benchmark_model_command if art["target"] == "tflite" else self.executor_runner_command
        if meter is not None:
            metered = measure_tool_energy(
                meter,
                lambda: self._run(tool(remote, settings)),
                settings.warmup + settings.runs,
                settings.energy_idle_s,
            )
            done, energy = metered["result"], metered["energy"]
        else:
            done = self._run(tool(remote, settings))
            energy = energy or {"measured": False, "reason": "not measured"}
        if done.returncode != 0 and "error: device" in done.stderr:
            raise DeviceLost(f"{self.spec} lost while benching {label_of(art)} ({done.stderr.strip()})")
        try:
            if art["target"] == "tflite":
                parsed = parse_benchmark_model(done.stdout + done.stderr)
            else:
                parsed = parse_executor_runner(done.stdout + done.stderr, settings.warmup)
        except ToolOutputError as exc:
            return {"status": "failed", "reason": str(exc)}
        latency = parsed["latency"]
        return {
            "status": "ok",
            "latency": latency,
            "throughput_per_s": 1e3 / latency["median_ms"],
            "load_seconds": parsed["load_seconds"],
            "first_load_seconds": None,
            "threads": settings.threads,
            "memory": parsed.get(
                "memory",
                {
                    "baseline_bytes": None,
                    "peak_bytes": None,
                    "added_bytes": None,
                    "how": "not reported by executor_runner",
                },
            ),  # fmt: skip
            "energy": energy,
        }


def parse_getprop(text: str) -> dict[str, str]:
    """`adb shell getprop` lines `[key]: [value]` as a dict."""
    props = {}
    for line in text.splitlines():
        key, sep, value = line.partition("]: [")
        if sep and key.startswith("["):
            props[key[1:]] = value.rstrip().removesuffix("]")
    return props
