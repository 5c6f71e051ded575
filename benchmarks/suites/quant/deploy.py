"""The `deploy` section: real int8 artifacts per target, scored in their runtime, then timed side by side."""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.machine import load_average
from benchmarks.suites.quant import ours, peers
from benchmarks.suites.quant.flags import bits_label
from benchmarks.suites.quant.jobs import Job, Unsupported, row
from benchmarks.suites.quant.workspace import Workspace, open_runner, run_artifact, score
from benchmarks.timing import interleaved, set_threads
from converters.targets.onnx.runner import optimized_op_counts


def deploy_jobs(ws: Workspace) -> list[Job]:
    """fp32 artifacts, ours and the peers' int8 artifacts per target (each scored in its runtime), then timing."""
    jobs = []
    for target in ws.args.targets:
        fp32 = functools.partial(_fp32_artifact, ws, target)
        jobs.append(_deploy_job(ws, target, "fp32", "fp32", "converters.convert", "fp32", fp32))
        for method in _our_deploy_methods(ws, target):
            for w, a in ws.args.deploy_bits:
                build = functools.partial(_ours_artifact, ws, method, target, w, a)
                jobs.append(_deploy_job(ws, target, "ours", method, "plan", bits_label(w, a), build))
        for method, variant, build in _peer_artifacts(ws, target):
            jobs.append(_deploy_job(ws, target, "peer", method, variant, "W8A8", build))
    jobs.extend(_timing_job(ws, threads) for threads in ws.args.threads)
    return jobs


def _timing_job(ws: Workspace, threads: int) -> Job:
    base = {"model": ws.subject.name, "kind": "timing", "threads": threads}
    label = f"time {len(ws.deployed) or 'the'} artifacts, {threads} thread(s), {ws.args.runs} runs"
    return Job(label, base, lambda: [time_deployed(ws, threads)])


def _our_deploy_methods(ws: Workspace, target: str) -> list[str]:
    """All deploy methods on onnx; on the other targets the one with the best W8A8 fake-quant SQNR."""
    methods = ["ptq"] if ws.subject.latency_only else list(ws.args.deploy_methods)
    if target == "onnx" or len(methods) == 1:
        return methods
    return [max(methods, key=lambda m: _safe_sqnr(ws, m))]


def _safe_sqnr(ws: Workspace, method: str) -> float:
    try:
        return ws.fake_quant_scores(method, 8, 8)["sqnr_db"]
    except Exception:
        return float("-inf")  # a method that cannot even be planned is never the best one


def _counting_cpu(fn: Callable[[], Any], seconds: list[float]) -> Callable[[], Any]:
    """`fn`, appending the process CPU time (every thread's) each call takes to `seconds`."""

    def run() -> Any:
        start = time.process_time()
        try:
            return fn()
        finally:
            seconds.append(time.process_time() - start)

    return run


def _fp32_artifact(ws: Workspace, target: str) -> tuple[Path, dict[str, Any]]:
    return ws.fp32_artifact(target), {}


def _ours_artifact(ws: Workspace, method: str, target: str, w: int, a: int) -> tuple[Path, dict[str, Any]]:
    """Our uniform plan lowered by `converters.quantized`; a target that cannot hold the bits says which it can."""
    from converters import ConversionError
    from converters.quantized import convert_quantized, precision_for

    prepared = ws.prepared(method, (w, a))
    plan = ours.uniform_plan(prepared, w, a)
    try:
        precision_for(plan, target)
    except ConversionError as exc:
        raise Unsupported(str(exc)) from None
    unit = dataclasses.replace(ws.subject.unit, module=prepared.module)
    parity = [(x,) for x in ws.subject.held_out[:2]]
    artifact = convert_quantized(unit, target, plan, ws.dir / f"ours-{method}-w{w}a{a}", parity_inputs=parity)
    quant = artifact.facts.get("quant", {})
    keep = ("ort_int8_kernels", "ort_float_gemms", "activations", "weight_dtypes_held", "fp32_layers")
    facts = {k: quant[k] for k in keep if k in quant}
    facts.update({k: artifact.facts[k] for k in ("delegated_subgraphs", "undelegated_ops") if k in artifact.facts})
    return artifact.path, facts


def _peer_artifacts(ws: Workspace, target: str) -> list[tuple[str, str, Callable[[], tuple[Path, dict]]]]:
    """(method, variant, build) of each peer's W8A8 artifact for `target`."""
    found = []
    if target == "onnx" and "ort" in ws.args.peers:
        for op_set in peers.ORT_OP_SETS:
            found.append(("onnxruntime quantize_static", f"MinMax, {op_set}", lambda o=op_set: _ort_artifact(ws, o)))
    if target == "tflite" and "aeq" in ws.args.peers:
        for op_set in peers.AEQ_OP_SETS:
            found.append(("AI Edge Quantizer", f"static, {op_set}", lambda o=op_set: _aeq_artifact(ws, o)))
    if target == "executorch" and "xnnpack" in ws.args.peers:
        found.append(("XNNPACKQuantizer (PT2E)", "static, per-channel", lambda: _xnnpack_artifact(ws)))
    return found


def _ort_artifact(ws: Workspace, op_set: str) -> tuple[Path, dict[str, Any]]:
    path = ws.ort("MinMax", op_set, 8)
    kernels = optimized_op_counts(path)
    int8 = ("QGemm", "QLinearMatMul", "MatMulIntegerToFloat", "QLinearConv", "ConvInteger", "MatMulInteger")
    facts = {
        "ort_int8_kernels": {op: kernels[op] for op in int8 if kernels[op]},
        "ort_float_gemms": {op: kernels[op] for op in ("MatMul", "Gemm", "Conv", "FusedMatMul") if kernels[op]},
        "dequantize_nodes": kernels["DequantizeLinear"],
    }
    return path, facts


def _aeq_artifact(ws: Workspace, op_set: str) -> tuple[Path, dict[str, Any]]:
    path = ws.aeq(op_set, 8, 8)
    ops = peers.tflite_op_counts(path)
    return path, {"quantize_ops": ops["QUANTIZE"], "dequantize_ops": ops["DEQUANTIZE"]}


def _xnnpack_artifact(ws: Workspace) -> tuple[Path, dict[str, Any]]:
    from converters import convert

    unit = dataclasses.replace(ws.subject.unit, module=ws.xnnpack(8, 8))
    parity = tuple(ws.subject.held_out[:1])
    # No parity floor: the figure that matters (vs fp32) is measured by the suite on every held-out image.
    artifact = convert(unit, "executorch", "fp32", ws.dir / "xnnpack-int8", parity_inputs=parity, min_sqnr_db=0.0)
    keep = ("delegated_subgraphs", "undelegated_nodes", "undelegated_ops")
    return artifact.path, {k: artifact.facts[k] for k in keep if k in artifact.facts}


def _deploy_job(
    ws: Workspace,
    target: str,
    origin: str,
    method: str,
    variant: str,
    bits: str,
    build: Callable[[], tuple[Path, dict]],
) -> Job:
    label = f"{target} fp32" if origin == "fp32" else f"{target} {method} ({variant}) {bits}"
    base = {"model": ws.subject.name, "kind": "artifact", "target": target, "origin": origin, "method": method}
    base.update(variant=variant, label=label, bits=bits, evaluated=target)

    def run() -> list[dict[str, Any]]:
        start = time.perf_counter()
        path, facts = build()
        seconds = time.perf_counter() - start
        figures = score(ws, run_artifact(target, path, ws.subject.held_out, ws.args.work_threads))
        ws.deployed[label] = (target, path)
        size = sum(f.stat().st_size for f in ([path] if path.is_file() else path.rglob("*")) if f.is_file())
        return [row(base, **figures, build_seconds=round(seconds, 1), file_bytes=size, facts=facts)]

    return Job(label, base, run)


def time_deployed(ws: Workspace, threads: int) -> dict[str, Any]:
    """Eager fp32 and every artifact the section made, interleaved on `threads` threads; medians."""
    from converters import RuntimeUnavailableError

    args, unit = ws.args, ws.subject.unit
    x = ws.subject.held_out[0]
    fns: dict[str, Callable[[], Any]] = {"eager fp32": lambda: unit.run_eager(x)}
    skipped = {}
    for label, (target, path) in ws.deployed.items():
        try:
            runner = open_runner(target, path, threads)
        except RuntimeUnavailableError as exc:
            skipped[label] = str(exc)
            continue
        fns[label] = lambda r=runner: r.run(x.numpy())
    set_threads(threads)  # after loading the runners: ExecuTorch's pool is process-wide, torch's must match
    load_before = load_average()
    cpu: dict[str, list[float]] = {label: [] for label in fns}
    try:
        stats = interleaved({k: _counting_cpu(fn, cpu[k]) for k, fn in fns.items()}, warmup=args.warmup, runs=args.runs)
    finally:
        set_threads(args.work_threads)
    cpu_ms = {k: 1000.0 * statistics.median(v[args.warmup :]) for k, v in cpu.items()}
    return {
        "model": ws.subject.name,
        "kind": "timing",
        "status": "ok",
        "threads": threads,
        "runs": args.runs,
        "warmup": args.warmup,
        "stats": {k: v.to_dict() for k, v in stats.items()},
        # CPU time of the whole process per call, and over the wall time: near `threads` on idle cores; on a saturated
        # machine every peer gets about the same share whatever its thread count, so wall ratios follow CPU time.
        "cpu_ms": {k: round(v, 1) for k, v in cpu_ms.items()},
        "cpu_per_wall": {k: round(cpu_ms[k] / (1000.0 * stats[k].median), 2) for k in stats},
        "not_run": skipped,
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }
