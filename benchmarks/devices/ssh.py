"""`ssh:[USER@]HOST[:PORT]`: copy the chosen artifacts and the board runner over scp, run it with the host's own
runtimes, bring the outputs back, and write the same results JSON as a local bench (device = the spec, machine
described by the host itself).

The host needs only `python3` (or the `python` given) with numpy and the runtimes of the artifacts to run; a
target whose runtime does not import there gets a "not run" row saying so, and a bundle none of whose chosen
artifacts can run there is a DeviceError. Everything goes through the system's OpenSSH client in batch mode
(keys only, never a password prompt), so ~/.ssh/config applies, or the file named by `ssh_config` (or the
EDGEVIT_SSH_CONFIG variable); the host's interpreter is `python` (or EDGEVIT_SSH_PYTHON), default `python3`.
Keep-alives make a host that vanishes mid-run a DeviceLost within ~15 s, not a hang.

Fidelity is computed here, on the outputs the host sent back, against the fp32 artifact of the same unit that
ran on the host: a bundle converted on x86 is thus parity-checked on the host's own runtimes and architecture.
A host that is an emulator (an aarch64 root under qemu-user on an x86 machine) is detected by its runner and the
results say its timings are the emulator's, not a board's.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench import BenchSettings, Progress, base_row, chosen_artifacts, measured, results_document
from benchmarks.bench_fidelity import fidelity_rows
from benchmarks.devices.base import BenchInputs, DeviceError, DeviceLost, label_of, seeded_inputs
from converters.bundle import read_manifest

RUNNER = Path(__file__).with_name("board_runner.py")
ENERGY = Path(__file__).parent.parent / "energy.py"
RUNTIME_NAMES = {"onnx": "onnxruntime", "tflite": "ai-edge-litert", "executorch": "executorch", "coreml": "coremltools"}
SSH_UNREACHABLE = 255  # what ssh exits with when the connection itself failed


@dataclass
class SshDevice:
    spec: str
    host: str
    user: str | None = None
    port: int | None = None
    python: str | None = None
    ssh_config: Path | None = None
    connect_timeout: int = 10
    kind: str = "ssh"

    def __post_init__(self) -> None:
        if self.ssh_config is None and os.environ.get("EDGEVIT_SSH_CONFIG"):
            self.ssh_config = Path(os.environ["EDGEVIT_SSH_CONFIG"])
        self.python = self.python or os.environ.get("EDGEVIT_SSH_PYTHON") or "python3"
        self._probe: dict[str, Any] | None = None

    # --- command lines (tested without a host) ---
    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def options(self) -> list[str]:
        """Batch mode (no prompt can hang a farm), a bounded connect, keep-alives that notice a dead host."""
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]  # fmt: skip
        return (["-F", str(self.ssh_config)] if self.ssh_config else []) + opts

    def ssh_command(self, remote: str) -> list[str]:
        return ["ssh", *self.options(), *(["-p", str(self.port)] if self.port else []), self.destination, remote]

    def scp_to(self, sources: list[Path], remote_dir: str) -> list[str]:
        port = ["-P", str(self.port)] if self.port else []
        return ["scp", "-q", "-r", *self.options(), *port, *map(str, sources), f"{self.destination}:{remote_dir}/"]

    def scp_from(self, remote_path: str, local_dir: Path) -> list[str]:
        port = ["-P", str(self.port)] if self.port else []
        return ["scp", "-q", "-r", *self.options(), *port, f"{self.destination}:{remote_path}", str(local_dir)]

    def runner_command(self, remote_dir: str, mode: str, *args: str) -> str:
        words = [self.python, f"{remote_dir}/runner.py", mode, *args]
        return f"cd {shlex.quote(remote_dir)} && " + " ".join(shlex.quote(w) for w in words)

    # --- the device ---
    def _ssh(self, remote: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(self.ssh_command(remote), input=stdin, capture_output=True, text=True,
                                  timeout=timeout, check=False)  # fmt: skip
        except FileNotFoundError:
            raise DeviceError(f"{self.spec}: no ssh client on this machine; install OpenSSH's client") from None
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{self.spec}: no answer within {timeout:.0f} s over ssh") from None

    def unreachable(self, stderr: str) -> str:
        last = (stderr.strip().splitlines() or ["connection failed"])[-1]
        return f"{self.spec} is unreachable over ssh ({last}); check the host, its sshd and your key"

    def probe(self) -> dict[str, Any]:
        """The runner's probe, piped to the host's Python (nothing copied): its machine and runtimes."""
        if self._probe is not None:
            return self._probe
        done = self._ssh(f"{shlex.quote(self.python)} - probe", stdin=RUNNER.read_text(), timeout=60)
        if done.returncode == SSH_UNREACHABLE:
            raise DeviceError(self.unreachable(done.stderr))
        if done.returncode == 127:
            raise DeviceError(f"{self.spec} has no {self.python}; install Python 3 there (or pass its python)")
        if "No module named 'numpy'" in done.stderr:
            raise DeviceError(f"{self.spec}: numpy is missing on the host; `pip install numpy` there")
        try:
            self._probe = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            err = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise DeviceError(f"{self.spec}: the runner failed on the host ({err})") from None
        return self._probe

    def describe(self) -> dict[str, Any]:
        return self.probe()["machine"]

    def check(self, targets: tuple[str, ...] | None = None) -> None:
        """Reachable, Python and numpy there, and (given `targets`) at least one of their runtimes importable."""
        runtimes = self.probe()["runtimes"]
        if targets and not any(runtimes.get(t, {}).get("available") for t in targets):
            names = ", ".join(RUNTIME_NAMES.get(t, t) for t in targets)
            raise DeviceError(f"{self.spec} has no runtime for {', '.join(targets)}; `pip install {names}` there")

    def not_run_reason(self, target: str) -> str | None:
        info = self.probe()["runtimes"].get(target, {"available": False, "reason": "unknown target"})
        if info["available"]:
            return None
        return f"not run on {self.spec}: {RUNTIME_NAMES.get(target, target)} does not import there ({info['reason']})"

    def bench(
        self, bundle: Path, settings: BenchSettings, progress: Progress | None = None, inputs: BenchInputs | None = None
    ) -> dict[str, Any]:
        bundle = Path(bundle)
        manifest = read_manifest(bundle)
        chosen = chosen_artifacts(bundle, manifest, settings)
        self.check(tuple(sorted({a["target"] for _, a in chosen})))
        per_unit, note = inputs or seeded_inputs(manifest)
        runnable = [(i, a) for i, a in chosen if self.not_run_reason(a["target"]) is None]
        with tempfile.TemporaryDirectory(prefix="edgevit-ssh-") as tmp:
            replies = self.run_remote(bundle, runnable, per_unit, settings, Path(tmp), progress)
        rows, outputs = [], {}
        for i, art in chosen:
            row = base_row(art)
            if (why := self.not_run_reason(art["target"])) is not None:
                rows.append({**row, "status": "not run", "reason": why})
            elif "error" in replies[i]:
                rows.append({**row, "status": "failed", "reason": replies[i]["error"]})
            else:
                outputs[(art["unit"], art["target"], art["precision"])] = replies[i].pop("outputs")
                rows.append({**row, "status": "ok", **measured(replies[i])})
        fidelity_rows(rows, outputs, manifest["model"]["task"])
        machine = self.probe()["machine"]
        overhead = {"measured": False, "summary": f"not measured on {self.spec} (one perf_counter pair per call)"}
        doc = results_document(bundle, manifest, settings, note, self.spec, machine, energy_of(rows), overhead, rows)
        doc["device_note"] = device_note(self.spec, machine)
        return doc

    def run_remote(
        self,
        bundle: Path,
        runnable: list[tuple[int, dict]],
        per_unit: Any,
        settings: BenchSettings,
        tmp: Path,
        progress: Progress | None,
    ) -> dict[int, dict[str, Any]]:
        """Stage, copy, run the job, fetch the outputs; {index: figures with outputs, or {"error": line}}."""
        stage = tmp / "stage"
        stage.mkdir()
        shutil.copy(RUNNER, stage / "runner.py")
        shutil.copy(ENERGY, stage / "energy.py")
        requests, labels = [], {}
        for i, art in runnable:
            name = f"a{i}-{Path(art['path']).name}"
            source = bundle / art["path"]
            (shutil.copytree if source.is_dir() else shutil.copy)(source, stage / name)
            xs = per_unit[art["unit"]]
            np.savez(stage / f"a{i}-in.npz", **{f"i{s}_{j}": x for s, t in enumerate(xs) for j, x in enumerate(t)})
            requests.append({"index": i, "artifact": art, "path": name, "inputs": f"a{i}-in.npz",
                             "outputs": f"out/a{i}-out.npz"})  # fmt: skip
            labels[i] = label_of(art)
        common = {"threads": settings.threads, "warmup": settings.warmup, "runs": settings.runs,
                  "sys_root": settings.sys_root, "energy_idle_s": settings.energy_idle_s,
                  "energy_window_s": settings.energy_window_s}  # fmt: skip
        (stage / "job.json").write_text(json.dumps({"requests": requests, "common": common}))
        (stage / "out").mkdir()
        made = self._ssh("mktemp -d -t edgevit-bench.XXXXXX", timeout=60)
        if made.returncode != 0:
            raise DeviceLost(self.unreachable(made.stderr))
        remote = made.stdout.strip()
        try:
            self._copy(self.scp_to(sorted(stage.iterdir()), remote), "copying the artifacts")
            replies = self._stream(self.runner_command(remote, "job", "job.json"), labels, settings, progress)
            self._copy(self.scp_from(f"{remote}/out", tmp), "fetching the outputs")
        finally:
            try:  # best effort: a host that was lost keeps its copy (in its temp directory)
                subprocess.run(self.ssh_command(f"rm -rf {shlex.quote(remote)}"), capture_output=True, timeout=60,
                               check=False)  # fmt: skip
            except subprocess.TimeoutExpired:
                pass
        for i, reply in replies.items():
            if "error" not in reply:
                reply["outputs"] = read_outputs(tmp / "out" / f"a{i}-out.npz")
        return replies

    def _copy(self, command: list[str], what: str) -> None:
        done = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            raise DeviceLost(f"{self.spec} lost while {what} ({last})")

    def _stream(
        self, remote: str, labels: dict[int, str], settings: BenchSettings, progress: Progress | None
    ) -> dict[int, dict[str, Any]]:
        replies: dict[int, dict[str, Any]] = {}
        done, current = False, None
        with tempfile.TemporaryFile("w+") as err:
            child = subprocess.Popen(self.ssh_command(remote), stdout=subprocess.PIPE, stderr=err, text=True)
            assert child.stdout is not None
            for line in child.stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue  # a login banner or shell noise, not the runner's protocol
                done = done or bool(message.get("done"))
                if "index" not in message:
                    continue
                if message["index"] != current and progress:
                    progress(labels[message["index"]], 0, settings.runs)
                current = message["index"]
                if "round" in message and progress:
                    progress(labels[current], message["round"], settings.runs)
                elif "result" in message:
                    replies[current] = message["result"]
                elif "error" in message:
                    replies[current] = {"error": message["error"]}
            code = child.wait()
            err.seek(0)
            stderr = err.read()
        if not done or code != 0:
            where = f"benching {labels[current]}" if current is not None else "starting the runner"
            last = (stderr.strip().splitlines() or [f"exit code {code}"])[-1]
            raise DeviceLost(f"{self.spec} lost while {where} ({last})")
        return replies


def read_outputs(path: Path) -> list[tuple[np.ndarray, ...]]:
    """The npz the runner wrote (`o<sample>_<output>`), as per-sample output tuples."""
    with np.load(path) as data:
        by_sample: dict[int, dict[int, np.ndarray]] = {}
        for key in data.files:
            sample, position = (int(k) for k in key[1:].split("_"))
            by_sample.setdefault(sample, {})[position] = data[key]
    return [tuple(s[j] for j in sorted(s)) for _, s in sorted(by_sample.items())]


def energy_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The top-level energy entry from what the host's meters gave per row."""
    ran = [r["energy"] for r in rows if r["status"] == "ok"]
    meters = sorted({e["meter"] for e in ran if e.get("measured")})
    if meters:
        return {"measured": True, "meters": meters}
    return {"measured": False, "reason": ran[0]["reason"] if ran else "not measured: nothing ran"}


def device_note(spec: str, machine: dict[str, Any]) -> str:
    """Where the figures come from; for an emulated host, that its timings are the emulator's."""
    note = f"run on {machine.get('hostname')} ({machine.get('architecture')}) through {spec} with its own runtimes"
    if machine.get("emulated"):
        note += f"; EMULATED ({machine['emulated']}): correctness only, timings are the emulator's, not a board's"
    return note
