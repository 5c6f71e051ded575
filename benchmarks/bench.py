"""`edgevit bench` for the local device: every artifact of a bundle timed, metered and compared, one row each.

The bundle is read through `converters.bundle` (manifest validated, every artifact's sha256 checked before
anything runs, so a tampered bundle is refused before the first timing). Each runnable artifact is benched in
its own child process (`bench_child`), one after the other: its peak memory is then its own, and a runtime
that crashes costs one row (recorded as failed, with the reason), not the run. An artifact this machine has no
runtime for (Core ML off macOS) gets a row saying so and no figure.

Fidelity: the bundle stores parity against eager PyTorch as figures (per output, at conversion time) but not
the eager reference inputs and outputs themselves, so bench cannot re-run that comparison. It reports the
manifest's figures beside its own comparison of every artifact against the bundle's fp32 artifact of the same
unit (the first fp32 one that ran here, itself within 60 dB of eager by the parity gate), on the same inputs,
which the caller supplies (`edgevit bench` uses the photos scikit-image ships for image inputs).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_fidelity import fidelity_rows
from benchmarks.bench_overhead import measure_overhead
from benchmarks.bench_quant import quant_facts
from benchmarks.bench_results import RESULTS_SCHEMA, RESULTS_VERSION, latency_summary
from benchmarks.energy import find_meters
from benchmarks.machine import describe_machine
from converters.bundle import read_manifest, verify_artifact
from converters.targets.registry import target_info

OS_NAMES = {"Darwin": "macOS", "Linux": "Linux", "Windows": "Windows"}

# progress(label, done, total): a label per artifact, rounds done of the rounds it will time.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class BenchSettings:
    """How to bench: timed runs after warm-up, runtime threads (None: one per available core), which targets,
    and the energy windows (used only where a meter exists)."""

    runs: int = 50
    warmup: int = 5
    threads: int | None = None
    targets: tuple[str, ...] | None = None
    energy_idle_s: float = 1.0
    energy_window_s: float = 2.0
    sys_root: str = "/sys"


def not_here_reason(target: str) -> str | None:
    """'not run here (needs macOS)' for a target whose runtime this OS lacks, else None."""
    info = target_info(target)
    if info.runs_here():
        return None
    return f"not run here (needs {' or '.join(OS_NAMES.get(s, s) for s in info.runs_on)})"


def bench_bundle(
    bundle: Path,
    inputs: Mapping[str, Sequence[tuple[np.ndarray, ...]]],
    inputs_note: str,
    settings: BenchSettings,
    progress: Progress | None = None,
    log: Path | None = None,
) -> dict[str, Any]:
    """The results of benching every selected artifact of `bundle` on this machine (the `edgevit.bench` JSON).

    `inputs` maps each unit to its input tuples (the first is timed; all are compared for fidelity). A bundle
    whose files do not match its manifest raises BundleError before anything runs.
    """
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    chosen = chosen_artifacts(bundle, manifest, settings)
    meters, energy_reason = find_meters(Path(settings.sys_root))
    rows, outputs = [], {}
    with tempfile.TemporaryDirectory(prefix="edgevit-bench-") as tmp:
        for i, art in chosen:
            row = base_row(art)
            if (why := not_here_reason(art["target"])) is not None:
                rows.append({**row, "status": "not run", "reason": why})
                continue
            label = f"{art['unit']} · {art['target']} {art['precision']}"
            result = run_child(bundle, art, i, inputs[art["unit"]], settings, Path(tmp), label, progress, log)
            if "error" in result:
                rows.append({**row, "status": "failed", "reason": result["error"]})
                continue
            outputs[(art["unit"], art["target"], art["precision"])] = result.pop("outputs")
            rows.append({**row, "status": "ok", **measured(result)})
    fidelity_rows(rows, outputs, manifest["model"]["task"])
    energy: dict[str, Any] = {"measured": False, "reason": energy_reason}
    if meters:
        energy = {"measured": True, "meters": [m.name for m in meters]}
    machine, overhead = describe_machine(), measure_overhead(settings.threads)
    return results_document(bundle, manifest, settings, inputs_note, "local", machine, energy, overhead, rows)


def results_document(
    bundle: Path,
    manifest: dict[str, Any],
    settings: BenchSettings,
    inputs_note: str,
    device: str,
    machine: dict[str, Any],
    energy: dict[str, Any],
    overhead: dict[str, Any],
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    """The results JSON around `rows`, whichever device they were measured on (`benchmarks.devices` uses it too)."""
    return {
        "schema": RESULTS_SCHEMA,
        "schema_version": RESULTS_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": device,
        "bundle": {
            "path": str(bundle.resolve()),
            "model": manifest["model"]["name"],
            "variant": manifest["model"]["variant"],
            "task": manifest["model"]["task"],
            "input_size": manifest["model"]["input_size"],
            "created": manifest["created"],
            "weights": manifest["weights"]["source"],
            "passes": [p["kind"] for p in manifest.get("passes", [])],
        },
        "settings": asdict(settings) | {"targets": list(settings.targets) if settings.targets else None},
        "inputs": inputs_note,
        "machine": machine,
        "energy": energy,
        "overhead": overhead,
        "rows": rows,
        "quant": quant_facts(bundle, manifest),
    }


def chosen_artifacts(bundle: Path, manifest: dict[str, Any], settings: BenchSettings) -> list[tuple[int, dict]]:
    """The artifacts `settings.targets` selects, each checked against its sha256 before anything is copied or run."""
    chosen = [
        (i, art)
        for i, art in enumerate(manifest["artifacts"])
        if settings.targets is None or art["target"] in settings.targets
    ]
    for i, art in chosen:
        verify_artifact(bundle, art, i)
    return chosen


def base_row(art: dict[str, Any]) -> dict[str, Any]:
    """What the manifest says of an artifact, whether or not it runs here."""
    parity = art["parity"]
    return {
        "unit": art["unit"],
        "target": art["target"],
        "precision": art["precision"],
        "path": art["path"],
        "size_bytes": art["size_bytes"],
        "outputs": [o["name"] for o in art["outputs"]],
        "parity_vs_eager_db": {k: v["sqnr_db"] for k, v in parity.items()} if parity else None,
        "parity_note": art["parity_note"],
    }


def measured(result: dict[str, Any]) -> dict[str, Any]:
    """A child's raw figures as a row's fields: latency summary, throughput (batch 1, back to back), memory."""
    latency = latency_summary(result["samples_s"])
    memory = result["memory"]
    return {
        "latency": latency,
        "throughput_per_s": 1e3 / latency["median_ms"],
        "load_seconds": result["load_seconds"],
        "first_load_seconds": result["first_load_seconds"],
        "threads": result["threads"],
        "memory": {
            **memory,
            "added_bytes": memory["peak_bytes"] - memory["baseline_bytes"],
            "how": "VmHWM of the child process that only loads and runs this artifact; baseline after imports",
        },
        "energy": result["energy"],
    }


def run_child(
    bundle: Path,
    art: dict[str, Any],
    index: int,
    unit_inputs: Sequence[tuple[np.ndarray, ...]],
    settings: BenchSettings,
    tmp: Path,
    label: str,
    progress: Progress | None,
    log: Path | None,
) -> dict[str, Any]:
    """Bench one artifact in a fresh interpreter; {"error": line} when the child failed, else its figures
    with the outputs it computed on `unit_inputs`."""
    stem = tmp / f"a{index}"
    np.savez(f"{stem}-in.npz", **{f"i{s}_{j}": x for s, xs in enumerate(unit_inputs) for j, x in enumerate(xs)})
    request = {
        "bundle": str(bundle.resolve()),
        "artifact": art,
        "index": index,
        "threads": settings.threads,
        "warmup": settings.warmup,
        "runs": settings.runs,
        "inputs": f"{stem}-in.npz",
        "outputs": f"{stem}-out.npz",
        "sys_root": settings.sys_root,
        "energy_idle_s": settings.energy_idle_s,
        "energy_window_s": settings.energy_window_s,
    }
    Path(f"{stem}.json").write_text(json.dumps(request))
    if progress:
        progress(label, 0, settings.runs)
    with open(log or Path(tmp) / "child.log", "ab") as err:
        child = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_child", f"{stem}.json"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        reply: dict[str, Any] = {}
        assert child.stdout is not None
        for line in child.stdout:
            message = json.loads(line)
            if "round" in message and progress:
                progress(label, message["round"], settings.runs)
            reply = message
        code = child.wait()
    if "result" in reply and code == 0:
        with np.load(f"{stem}-out.npz") as data:
            keys = sorted(data.files, key=lambda k: tuple(int(n) for n in k[1:].split("_")))
            by_sample: dict[int, list[np.ndarray]] = {}
            for key in keys:
                by_sample.setdefault(int(key[1:].split("_")[0]), []).append(data[key])
        return {**reply["result"], "outputs": [tuple(v) for _, v in sorted(by_sample.items())]}
    return {"error": reply.get("error") or f"the runner process exited with code {code} (see the log)"}
