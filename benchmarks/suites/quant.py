"""Quantization suite: edgevit's PTQ, MPTQ and Q-HyViT side by side with the peers, on real trained weights.

Per model, every method is calibrated on the same images and judged on held-out images from other source
files (`quant_subjects`). Three sections, each runnable alone (`--sections`, `--models`, `--methods`,
`--peers`) and merged into one results file (a later run replaces only the methods it measured again, see
`merge`, so a long run can be split or partly redone):

- `uniform`: output SQNR vs fp32, top-1 agreement and accuracy (where labels exist) at each bit setting, for
  ours (`ptq`, `mptq`, and `qhyvit` with and without joint bridge reconstruction on hybrids; fake-quant in
  torch) and the peers (onnxruntime `quantize_static`, ExecuTorch's `XNNPACKQuantizer`, AI Edge Quantizer —
  evaluated in their own runtimes, or in their PT2E graph where that is the only form of a bit-width).
- `mixed`: greedy mixed precision under budgets given as fractions of the W8A8 plan's weight bytes.
- `deploy`: real int8 artifacts (ours through `converters.quantized`, the peers' own) per target that runs
  here, their SQNR vs fp32 measured by running them, then every artifact timed side by side with eager fp32
  and the fp32 artifacts (`benchmarks.timing.interleaved`, medians). Core ML cannot run on Linux: its row
  says so.

A method that fails on a model (a peer crashing, a layer ours cannot handle) becomes a row with its error in
one line; the suite goes on. The issue's goals are judged in the summary, with the margin either way.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor, nn

from benchmarks.machine import DEFAULT_DISTRIBUTIONS, describe_machine, load_average
from benchmarks.report import print_tables, write_report
from benchmarks.suites import quant_ours as ours
from benchmarks.suites import quant_peers as peers
from benchmarks.suites.quant_report import goals, tables
from benchmarks.suites.quant_subjects import ENCODER_NAME, STUDENT_NAMES, Subject, bridges_of, loader
from benchmarks.timing import interleaved, set_threads
from converters.targets.registry import TARGET_INFO

SECTIONS = ("uniform", "mixed", "deploy")
PEERS = ("ort", "xnnpack", "aeq")
# Deploy times every artifact, so it takes the targets whose runtime exists here (the registry says which).
TARGETS = tuple(name for name, info in TARGET_INFO.items() if info.runs_here())
DEFAULT_MODELS = ("dinov2_s_focus", "efficientnet_lite0", *STUDENT_NAMES, ENCODER_NAME)
EXAMPLE = (
    "OMP_WAIT_POLICY=PASSIVE python -m benchmarks.suites.quant --models dinov2_s_focus,efficientnet_lite0,"
    "hybrid_distilled --bits w8a8,w4a8,w6a6 --runs 10 --threads 1,2 --out benchmarks/results/quant"
)


# ------------------------------------------------------------------------------------------------------ CLI


def parse_bits(text: str) -> tuple[int, int]:
    """Parse a bit setting: "w4a8" → (4, 8)."""
    low = text.strip().lower()
    if not (low.startswith("w") and "a" in low):
        raise ValueError(f"bit setting {text!r} is not WnAm (e.g. w8a8)")
    w, a = low[1:].split("a", 1)
    return int(w), int(a)


def bits_label(weight_bits: int | None, act_bits: int) -> str:
    return f"W{weight_bits}A{act_bits}" if weight_bits is not None else f"A{act_bits}"


def _split(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.suites.quant",
        description="Quantize each model with edgevit's methods and the peers' on the same calibration images, "
        "judge them on held-out images, time the int8 artifacts; writes OUT.json and OUT.md.",
        epilog=f"example (three models; the defaults run every model, the EfficientTAM-S encoder in deploy only):\n"
        f"  {EXAMPLE}\n\nA quick look: --models dinov2_s_focus --sections uniform --peers ort --ort-calibrators "
        "MinMax --bits w8a8.\nRuns merge into OUT.json: the methods a run measures again replace their earlier rows "
        "(deploy: per model);\n--fresh starts over. On cores shared with other jobs, set OMP_WAIT_POLICY=PASSIVE "
        "(see the lowering suite).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--models", default=",".join(DEFAULT_MODELS), help="comma-separated (students and the encoder included)")
    add("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    add("--bits", default="w8a8,w4a8,w6a6", help="uniform bit settings WnAm, comma-separated")
    add("--methods", default="ptq,mptq,qhyvit", help="ours: ptq, mptq, qhyvit (qhyvit on hybrid models only)")
    add("--peers", default=",".join(PEERS), help=f"comma-separated, of {', '.join(PEERS)}")
    add("--ort-calibrators", default=",".join(peers.ORT_CALIBRATORS), help="onnxruntime calibrate methods")
    add("--budgets", default="0.75,0.6,0.5", help="mixed precision: fractions of the W8A8 weight bytes")
    add("--mixed-base", default="ptq,mptq", help="the prepared models mixed precision plans on (ptq, mptq)")
    add("--targets", default=",".join(TARGETS), help=f"deploy: comma-separated, of {', '.join(TARGETS)}")
    add("--deploy-methods", default="ptq,mptq", help="ours on onnx; the best of them goes to tflite/executorch")
    add("--deploy-bits", default="w8a8,w4a8", help="ours: bit settings to lower where the target holds them")
    add("--qhyvit-iters", type=int, default=200, help="Q-HyViT reconstruction iterations per block")
    add("--qhyvit-bits", default="w4a8", help="Q-HyViT bit settings (each runs twice: bridges joint/separate)")
    add("--calib-images", type=int, default=24, help="calibration images per model (spread over the sources)")
    add("--eval-images", type=int, default=24, help="held-out images per model")
    add("--frames", type=int, default=14, help="video frames per clip for the packaged models")
    add("--student-cache", type=Path, default=None, help="students' trained-weights cache (default: theirs)")
    add("--runs", type=int, default=10, help="timed rounds (default 10)")
    add("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    add("--threads", default="1", help="thread count(s) for timing torch and every runtime, comma-separated")
    add("--work-threads", type=int, default=2, help="threads for calibration, conversion, evaluation")
    add("--out", type=Path, default=Path("benchmarks/results/quant"), help="results path stem (.json/.md)")
    add("--artifacts", type=Path, default=None, help="keep artifacts here (default: a temporary folder)")
    add("--fresh", action="store_true", help="do not merge into an existing OUT.json")
    add("--report-only", action="store_true", help="re-tabulate OUT.json without measuring anything")
    add("--show-backend-output", action="store_true", help="let backends print (default: to a log file)")
    args = parser.parse_args(argv)
    for name in (
        "models",
        "sections",
        "methods",
        "peers",
        "ort_calibrators",
        "targets",
        "deploy_methods",
        "mixed_base",
    ):
        setattr(args, name, _split(getattr(args, name)))
    try:
        args.bits = [parse_bits(b) for b in _split(args.bits)]
        args.deploy_bits = [parse_bits(b) for b in _split(args.deploy_bits)]
        args.qhyvit_bits = [parse_bits(b) for b in _split(args.qhyvit_bits)]
        args.threads = [int(t) for t in _split(args.threads)]
        args.budgets = [float(b) for b in _split(args.budgets)]
    except ValueError as exc:
        parser.error(str(exc))
    for name, valid in (
        ("sections", SECTIONS),
        ("peers", PEERS),
        ("targets", TARGETS),
        ("methods", ("ptq", "mptq", "qhyvit")),
        ("deploy_methods", ours.PLAN_METHODS),
        ("mixed_base", ours.PLAN_METHODS),
        ("ort_calibrators", peers.ORT_CALIBRATORS),
    ):
        if unknown := [v for v in getattr(args, name) if v not in valid]:
            parser.error(f"unknown {name.replace('_', '-')} {', '.join(unknown)}; valid: {', '.join(valid)}")
    if args.runs < 1 or args.warmup < 0 or not args.threads or min(args.threads) < 1 or args.work_threads < 1:
        parser.error("need --runs >= 1, --warmup >= 0, --threads >= 1, --work-threads >= 1")
    if args.calib_images < 4 or args.eval_images < 2 or not all(0 < b <= 1 for b in args.budgets):
        parser.error("need --calib-images >= 4, --eval-images >= 2 and budgets in (0, 1]")
    return args


# ------------------------------------------------------------------------------------------ the workspace


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 300 else text[:297] + "..."


class Workspace:
    """One model's state across the sections of a run: calibrations, graphs and artifacts are built once.

    A build that failed is remembered as failed (and re-raised), so a peer that crashes is tried once.
    """

    def __init__(self, subject: Subject, directory: Path, args: argparse.Namespace) -> None:
        self.subject = subject
        self.dir = directory
        self.args = args
        self.deployed: dict[str, tuple[str, Path]] = {}  # label → (target, path) of the artifacts to time
        self._memo: dict[tuple, tuple[Any, BaseException | None]] = {}

    def memo(self, key: tuple, build: Callable[[], Any]) -> Any:
        if key not in self._memo:
            try:
                self._memo[key] = (build(), None)
            except Exception as exc:
                self._memo[key] = (None, exc)
        value, error = self._memo[key]
        if error is not None:
            raise error
        return value

    def reference(self) -> list[list[Tensor]]:
        return self.memo(("reference",), lambda: module_outputs(self.subject.model, self.subject.held_out))

    def calib_arrays(self) -> list[np.ndarray]:
        return [x.numpy() for x in self.subject.calib]

    def prepared(self, method: str, bits: tuple[int, int]) -> ours.Prepared:
        """The model `method` plans on; ptq's is the same at every bit-width, mptq's smoothing is per bits."""
        key = bits if method == "mptq" else (8, 8)
        return self.memo(
            ("prepared", method, key), lambda: ours.prepare(method, self.subject.model, self.subject.calib, key)
        )

    def fake_quant_scores(self, method: str, weight_bits: int, act_bits: int) -> dict[str, Any]:
        """Scores of our uniform plan (fake-quant); also decides which of ours goes to tflite/executorch."""

        def build() -> dict[str, Any]:
            from quant.fake_quant import apply_plan

            prepared = self.prepared(method, (weight_bits, act_bits))
            plan = ours.uniform_plan(prepared, weight_bits, act_bits)
            outputs = module_outputs(apply_plan(prepared.module, plan), self.subject.held_out)
            return {**score(self, outputs), "weight_bytes": plan.weight_bytes()}

        return self.memo(("fake_quant", method, weight_bits, act_bits), build)

    def fp32_artifact(self, target: str) -> Path:
        from converters import convert

        return self.memo(("fp32", target), lambda: convert(self.subject.unit, target, "fp32", self.dir / "fp32").path)

    def ort_input(self) -> tuple[Path, str]:
        return self.memo(("ort_pre",), lambda: peers.ort_preprocess(self.fp32_artifact("onnx"), self.dir / "pre.onnx"))

    def ort(self, calibrator: str, op_set: str, weight_bits: int) -> Path:
        def build() -> Path:
            model, _ = self.ort_input()
            name = f"ort-{calibrator}-{op_set.replace('/', '_').replace(' ', '_')}-w{weight_bits}.onnx"
            return peers.ort_static(
                model, self.dir / name, self.calib_arrays(), calibrator, op_set, weight_bits, self.dir
            )

        return self.memo(("ort", calibrator, op_set, weight_bits), build)

    def xnnpack(self, weight_bits: int, act_bits: int) -> torch.fx.GraphModule:
        unit = self.subject.unit
        return self.memo(
            ("xnnpack", weight_bits, act_bits),
            lambda: peers.xnnpack_static(
                unit.module, unit.example_inputs[0], self.subject.calib, weight_bits, act_bits
            ),
        )

    def aeq(self, op_set: str, weight_bits: int, act_bits: int) -> Path:
        def build() -> Path:
            name = f"aeq-{op_set.replace('/', '_').replace(' ', '_').replace(',', '')}-w{weight_bits}a{act_bits}.tflite"
            fp32 = self.fp32_artifact("tflite")
            return peers.aeq_static(fp32, self.dir / name, self.calib_arrays(), op_set, weight_bits, act_bits)

        return self.memo(("aeq", op_set, weight_bits, act_bits), build)


# --------------------------------------------------------------------------------------------------- scoring


def _as_list(out: Tensor | tuple | list) -> list[Tensor]:
    return [out] if isinstance(out, Tensor) else [t for item in out for t in _as_list(item)]


@torch.no_grad()
def module_outputs(module: nn.Module | Callable, inputs: list[Tensor]) -> list[list[Tensor]]:
    """Every output of `module` per held-out input (float, detached)."""
    if isinstance(module, nn.Module):
        module.eval()
    return [[t.detach().float() for t in _as_list(module(x))] for x in inputs]


def runner_outputs(runner: Any, inputs: list[Tensor]) -> list[list[Tensor]]:
    """Every output of a loaded artifact per held-out input, run in its own runtime."""
    return [[torch.from_numpy(np.asarray(o)).float() for o in runner.run(x.numpy())] for x in inputs]


def score(ws: Workspace, outputs: list[list[Tensor]]) -> dict[str, Any]:
    """SQNR vs fp32 over every output of every held-out image; top-1 agreement and accuracy for classifiers."""
    from quant.metrics import outputs_sqnr, top1_agreement

    reference = ws.reference()
    result: dict[str, Any] = {
        "sqnr_db": outputs_sqnr([t for o in reference for t in o], [t for o in outputs for t in o]),
        "top1_agreement": None,
        "accuracy": None,
    }
    if ws.subject.classifier:
        ref_logits = torch.cat([o[0].reshape(1, -1) for o in reference])
        logits = torch.cat([o[0].reshape(1, -1) for o in outputs])
        result["top1_agreement"] = top1_agreement(ref_logits, logits)
        if ws.subject.labels is not None:
            result["accuracy"] = (logits.argmax(-1) == ws.subject.labels).double().mean().item()
            result["fp32_accuracy"] = (ref_logits.argmax(-1) == ws.subject.labels).double().mean().item()
    return result


def open_runner(target: str, path: Path, threads: int) -> Any:
    """The artifact's runner, taking and returning floats even where the peer made integer inputs/outputs."""
    from converters import load_runner

    runner = load_runner(target, path, threads)
    return peers.float_io(runner, path) if target == "tflite" else runner


def run_artifact(target: str, path: Path, inputs: list[Tensor], threads: int) -> list[list[Tensor]]:
    return runner_outputs(open_runner(target, path, threads), inputs)


# ------------------------------------------------------------------------------------------------------ jobs


class Unsupported(Exception):
    """A method or target cannot express the requested bits; the message says what it can."""


@dataclass
class Job:
    """One step of a section: `run` returns rows; if it raises, the row `base` with the error is recorded."""

    label: str
    base: dict[str, Any]
    run: Callable[[], list[dict[str, Any]]]


def row(base: dict[str, Any], **values: Any) -> dict[str, Any]:
    return {"status": "ok", **base, **values}


def timed(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    start = time.perf_counter()
    out = fn()
    return {**out, "seconds": round(time.perf_counter() - start, 2)}


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


def mixed_jobs(ws: Workspace) -> list[Job]:
    """Greedy mixed precision at each budget on each base, beside the same prepared model's uniform W8A8 plan."""
    return [_mixed_job(ws, method) for method in ws.args.mixed_base]


def _mixed_job(ws: Workspace, method: str) -> Job:
    base = {"model": ws.subject.name, "origin": "ours", "method": f"{method} + greedy MP", "bits": "mixed"}
    base["evaluated"] = "fake-quant (torch)"

    def run() -> list[dict[str, Any]]:
        from quant.fake_quant import apply_plan

        w8 = ws.fake_quant_scores(method, 8, 8)
        prepared = ws.prepared(method, (8, 8))
        plans, table_seconds = ours.mixed_plans(prepared, ws.subject.calib, ws.args.budgets)
        rows = []
        for fraction, plan in plans.items():
            outputs = module_outputs(apply_plan(prepared.module, plan), ws.subject.held_out)
            rows.append(
                row(
                    base,
                    **score(ws, outputs),
                    variant=f"budget {fraction:.0%} of W8A8 weights",
                    budget_fraction=fraction,
                    weight_bytes=plan.weight_bytes(),
                    w8a8_weight_bytes=w8["weight_bytes"],
                    w8a8_sqnr_db=w8["sqnr_db"],
                    weight_bits=plan.summary()["weight_bits"],
                    predicted_sqnr_db=plan.metadata.get("predicted_sqnr_db"),
                    sensitivity_seconds=round(table_seconds, 1),
                    note=ours.MIXED_NOTES[method],
                )
            )
        return rows

    return Job(f"{method} mixed precision ({len(ws.args.budgets)} budgets)", base, run)


# ---------------------------------------------------------------------------------------------------- deploy


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
    kernels = peers.ort_kernel_counts(path)
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
    try:
        stats = interleaved(fns, warmup=args.warmup, runs=args.runs)
    finally:
        set_threads(args.work_threads)
    return {
        "model": ws.subject.name,
        "kind": "timing",
        "status": "ok",
        "threads": threads,
        "runs": args.runs,
        "warmup": args.warmup,
        "stats": {k: v.to_dict() for k, v in stats.items()},
        "not_run": skipped,
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


SECTION_JOBS: dict[str, Callable[[Workspace], list[Job]]] = {
    "uniform": uniform_jobs,
    "mixed": mixed_jobs,
    "deploy": deploy_jobs,
}


# ------------------------------------------------------------------------------------------------- running


def run_job(job: Job) -> list[dict[str, Any]]:
    """The job's rows, or one row with its error: a method failing on a model is a result, not a crash."""
    try:
        return job.run()
    except Unsupported as exc:
        return [{**job.base, "status": "unsupported", "note": " ".join(str(exc).split())}]
    except Exception as exc:
        return [{**job.base, "status": "failed", "error": one_line(exc)}]


def run_subject(
    subject: Subject,
    sections: list[str],
    args: argparse.Namespace,
    directory: Path,
    progress: Progress | None = None,
    log: Path | None = None,
) -> dict[str, Any]:
    """Every requested section for one model: {"subject": facts, "sections": {name: {"rows", "seconds"}}}."""
    from benchmarks.suites.lowering import backend_output_to

    ws = Workspace(subject, directory, args)
    wanted = [s for s in sections if not (subject.latency_only and s != "deploy")]
    result: dict[str, Any] = {"subject": subject.describe(), "sections": {}}
    for section in wanted:
        jobs = SECTION_JOBS[section](ws)
        task = progress.add_task(f"{subject.name}: {section}", total=len(jobs)) if progress else None
        start, rows = time.perf_counter(), []
        for job in jobs:
            if progress is not None:
                progress.update(task, description=f"{subject.name}: {section}: {job.label}")
            with backend_output_to(log):
                rows.extend(run_job(job))
            if progress is not None:
                progress.advance(task)
        result["sections"][section] = {"rows": rows, "seconds": round(time.perf_counter() - start, 1)}
    return result


def merge(previous: dict[str, Any], models: dict[str, Any]) -> dict[str, Any]:
    """Earlier results with this run's measurements in place of theirs, so a long run can be split or redone.

    Per model and section, the rows of every method this run measured (who + method) replace that method's
    earlier rows, and other methods' rows are kept; `deploy` is replaced whole, because its timings were taken
    side by side and only one run's artifacts belong in one comparison.
    """
    merged = {
        name: {"subject": m["subject"], "sections": {k: dict(v) for k, v in m["sections"].items()}}
        for name, m in previous.items()
    }
    for name, fresh in models.items():
        entry = merged.setdefault(name, {"subject": fresh["subject"], "sections": {}})
        entry["subject"] = fresh["subject"]
        for section, new in fresh["sections"].items():
            old = entry["sections"].get(section)
            if old is None or section == "deploy":
                entry["sections"][section] = new
                continue
            measured = {(r.get("origin"), r.get("method")) for r in new["rows"]}
            kept = [r for r in old["rows"] if (r.get("origin"), r.get("method")) not in measured]
            entry["sections"][section] = {"rows": kept + new["rows"], "seconds": new["seconds"]}
    return merged


def load_previous(json_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(models, runs) of an earlier results file, or empty ones when there is none."""
    if not json_path.is_file():
        return {}, []
    data = json.loads(json_path.read_text()).get("data", {})
    return data.get("models", {}), data.get("runs", [])


def run_record(args: argparse.Namespace, started: float, machine: dict[str, Any]) -> dict[str, Any]:
    """What one invocation did, kept beside the figures (several runs may have filled one file)."""
    keep = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    return {
        "args": keep,
        "taken_at": machine["taken_at"],
        "wall_s": round(time.perf_counter() - started, 1),
        "load_average_start": machine["load_average"],
        "load_average_end": load_average(),
        "threading_env": machine["threading_env"],
    }


@contextlib.contextmanager
def artifact_dir(keep: Path | None):
    """Where artifacts go: the kept folder, or a temporary one removed afterwards."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    tmp = Path(tempfile.mkdtemp(prefix="edgevit-quant-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """Every requested model and section, as plain data keyed by model name."""
    log = None if args.show_backend_output else Path(tempfile.gettempdir()) / f"edgevit-quant-{os.getpid()}.log"
    if log:
        console.print(f"backend output goes to {log}", style="dim")
    set_threads(args.work_threads)
    limits = (args.calib_images, args.eval_images)
    models: dict[str, Any] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with artifact_dir(args.artifacts) as art_root:
        with Progress(*columns, console=console, redirect_stdout=False, redirect_stderr=False) as progress:
            for name in args.models:
                task = progress.add_task(f"{name}: loading", total=None)
                try:
                    with contextlib.redirect_stdout(sys.stderr):
                        subject = loader(name, args.frames, limits, args.student_cache)()
                except Exception as exc:
                    console.print(f"[red]{name}: cannot load ({one_line(exc)}); skipped[/]")
                    continue
                finally:
                    progress.remove_task(task)
                models[name] = run_subject(subject, args.sections, args, art_root / name, progress, log)
    return models


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = os.fdopen(os.dup(1), "w")
    console = Console(file=out, width=None if out.isatty() else 200)
    json_path = args.out.with_suffix(".json")
    previous, runs = ({}, []) if args.fresh else load_previous(json_path)
    if args.report_only:
        if not runs:
            console.print(f"[red]--report-only: no results in {json_path} to tabulate[/]")
            return 1
        machine = json.loads(json_path.read_text())["machine"]
        merged = previous
    else:
        machine = describe_machine((*DEFAULT_DISTRIBUTIONS, "ai-edge-quantizer", "torchao"))
        started = time.perf_counter()
        merged = merge(previous, measure(args, console))
        runs = [*runs, run_record(args, started, machine)]
    try:
        result_tables, summary = tables(merged), goals(merged) + run_notes(runs, machine)
    except Exception as exc:  # the measurements took minutes: keep them even if tabulating them fails
        console.print(f"[red]tables could not be built ({one_line(exc)}); writing the raw results only[/]")
        result_tables, summary = [], [f"tables could not be built: {one_line(exc)}"]
    json_file, md_file = write_report(
        args.out.parent,
        args.out.name,
        title="Quantization: edgevit's PTQ, MPTQ and Q-HyViT against the peers",
        machine=machine,
        tables=result_tables,
        summary=summary,
        data={"models": merged, "runs": runs},
    )
    print_tables(result_tables, console)
    for line in summary:
        console.print(f"• {line}")
    console.print(f"wrote {json_file} and {md_file}")
    return 0


def run_notes(runs: list[dict[str, Any]], machine: dict[str, Any]) -> list[str]:
    """How the figures were taken: runs merged, threads, load on the shared machine."""
    last = runs[-1]
    lines = [
        f"{len(runs)} run(s) merged into this file, {sum(r['wall_s'] for r in runs) / 60:.0f} min of wall time in "
        f"all; the last took {last['wall_s']:.0f} s (models {', '.join(last['args']['models'])}; sections "
        f"{', '.join(last['args']['sections'])}).",
        f"Timing: {last['args']['runs']} interleaved rounds after {last['args']['warmup']} warm-up rounds, "
        f"{'/'.join(map(str, last['args']['threads']))} thread(s) for torch and every runtime; calibration and "
        "conversion on "
        f"{last['args']['work_threads']} thread(s).",
        "The machine is shared with other agents' jobs: 1-minute load average "
        + "; ".join(f"{r['load_average_start'][0]} → {r['load_average_end'][0]}" for r in runs)
        + f" on {machine['cores_available']} cores. Ratios of interleaved medians hold better than absolute ms.",
        f"OMP_WAIT_POLICY={last['threading_env'].get('OMP_WAIT_POLICY') or 'unset'} in the last run.",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
