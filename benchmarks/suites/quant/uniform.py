"""The `uniform` section: ours and the peers at every requested bit setting, scored on held-out images."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.suites.quant import ours, peers
from benchmarks.suites.quant.flags import bits_label
from benchmarks.suites.quant.jobs import Job, Unsupported, row, timed
from benchmarks.suites.quant.subjects import bridges_of
from benchmarks.suites.quant.workspace import Workspace, module_outputs, run_artifact, score


def uniform_jobs(ws: Workspace) -> list[Job]:
    """Ours and the peers at every requested bit setting."""
    args, model = ws.args, ws.subject.name
    jobs = []
    for method in (m for m in args.methods if m in ours.PLAN_METHODS):
        for w, a in args.bits:
            base = {"model": model, "origin": "ours", "method": method, "variant": ours.VARIANTS[method]}
            base.update(bits=bits_label(w, a), evaluated="fake-quant (torch)")
            jobs.append(Job(f"{method} {base['bits']}", base, _ours_uniform(ws, base, method, w, a)))
    if "qhyvit" in args.methods and bridges_of(ws.subject):
        for w, a in args.qhyvit_bits:
            for joint in (True, False):
                variant = "bridges joint" if joint else "bridges separate (ablation)"
                base = {"model": model, "origin": "ours", "method": "qhyvit", "variant": variant}
                base.update(bits=bits_label(w, a), evaluated="fake-quant (torch)")
                jobs.append(Job(f"qhyvit {base['bits']} {variant}", base, _qhyvit_uniform(ws, base, w, a, joint)))
    for peer in args.peers:
        jobs.extend(PEER_JOBS[peer](ws))
    return jobs


def _ours_uniform(ws: Workspace, base: dict[str, Any], method: str, w: int, a: int) -> Callable[[], list[dict]]:
    def run() -> list[dict[str, Any]]:
        figures = timed(lambda: ws.fake_quant_scores(method, w, a))
        return [row(base, **figures, prepare_seconds=round(ws.prepared(method, (w, a)).seconds, 2))]

    return run


def _qhyvit_uniform(ws: Workspace, base: dict[str, Any], w: int, a: int, joint: bool) -> Callable[[], list[dict]]:
    def run() -> list[dict[str, Any]]:
        def measure() -> dict[str, Any]:
            model, plan = ours.qhyvit(ws.subject.model, ws.subject.calib, w, a, joint, ws.args.qhyvit_iters)
            return {**score(ws, module_outputs(model, ws.subject.held_out)), "weight_bytes": plan.weight_bytes()}

        return [row(base, **timed(measure), note=f"{ws.args.qhyvit_iters} reconstruction iterations per block")]

    return run


def ort_jobs(ws: Workspace) -> list[Job]:
    jobs = []
    for calibrator in ws.args.ort_calibrators:
        for op_set in peers.ORT_OP_SETS:
            for w, a in ws.args.bits:
                base = {"model": ws.subject.name, "origin": "peer", "method": "onnxruntime quantize_static"}
                base.update(variant=f"{calibrator}, {op_set}", bits=bits_label(w, a), evaluated="onnxruntime")
                jobs.append(
                    Job(
                        f"ort {calibrator} {op_set} {base['bits']}",
                        base,
                        _ort_uniform(ws, base, calibrator, op_set, w, a),
                    )
                )
    return jobs


def _ort_uniform(ws: Workspace, base: dict, calibrator: str, op_set: str, w: int, a: int) -> Callable[[], list[dict]]:
    def run() -> list[dict[str, Any]]:
        if reason := peers.unsupported_ort(w, a):
            raise Unsupported(reason)

        def measure() -> dict[str, Any]:
            path = ws.ort(calibrator, op_set, w)
            outputs = run_artifact("onnx", path, ws.subject.held_out, ws.args.work_threads)
            return {**score(ws, outputs), "weight_bytes": peers.onnx_weight_bytes(path)}

        return [row(base, **timed(measure), note=ws.ort_input()[1])]

    return run


def xnnpack_jobs(ws: Workspace) -> list[Job]:
    jobs = []
    for w, a in ws.args.bits:
        base = {"model": ws.subject.name, "origin": "peer", "method": "XNNPACKQuantizer (PT2E)"}
        base.update(variant="static, per-channel", bits=bits_label(w, a), evaluated="PT2E graph (torch)")
        jobs.append(Job(f"xnnpack {base['bits']}", base, _xnnpack_uniform(ws, base, w, a)))
    return jobs


def _xnnpack_uniform(ws: Workspace, base: dict, w: int, a: int) -> Callable[[], list[dict]]:
    def run() -> list[dict[str, Any]]:
        def measure() -> dict[str, Any]:
            graph = ws.xnnpack(w, a)
            return {
                **score(ws, module_outputs(graph, ws.subject.held_out)),
                "weight_bytes": peers.pt2e_weight_bytes(graph),
            }

        note = peers.unsupported_xnnpack_lowering(w, a) or "lowered to XNNPACK in the deploy section"
        return [row(base, **timed(measure), note=note)]

    return run


def aeq_jobs(ws: Workspace) -> list[Job]:
    jobs = []
    for op_set in peers.AEQ_OP_SETS:
        for w, a in ws.args.bits:
            base = {"model": ws.subject.name, "origin": "peer", "method": "AI Edge Quantizer"}
            base.update(variant=f"static, {op_set}", bits=bits_label(w, a), evaluated="LiteRT")
            jobs.append(Job(f"aeq {op_set} {base['bits']}", base, _aeq_uniform(ws, base, op_set, w, a)))
    return jobs


def _aeq_uniform(ws: Workspace, base: dict, op_set: str, w: int, a: int) -> Callable[[], list[dict]]:
    def run() -> list[dict[str, Any]]:
        if reason := peers.unsupported_aeq(w, a):
            raise Unsupported(reason)

        def measure() -> dict[str, Any]:
            path = ws.aeq(op_set, w, a)
            outputs = run_artifact("tflite", path, ws.subject.held_out, ws.args.work_threads)
            return {**score(ws, outputs), "weight_bytes": peers.tflite_weight_bytes(path)}

        return [row(base, **timed(measure), note="on the fp32 .tflite from converters.convert")]

    return run


PEER_JOBS: dict[str, Callable[[Workspace], list[Job]]] = {"ort": ort_jobs, "xnnpack": xnnpack_jobs, "aeq": aeq_jobs}
