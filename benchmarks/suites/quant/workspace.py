"""One model's state across the sections of a run, and how every method's outputs are scored against fp32."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks.suites.quant import ours, peers
from benchmarks.suites.quant.subjects import Subject


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
        """The model `method` plans on; mptq's smoothing is per bits, 8-bit weights get AWQ input scaling as the
        quant pass gives them (`ours.prepare`), ptq's other widths share one."""
        key = bits if method == "mptq" or bits[0] == 8 else (None, None)
        return self.memo(
            ("prepared", method, key), lambda: ours.prepare(method, self.subject.model, self.subject.calib, bits)
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
    """SQNR vs fp32 over every output of every held-out image (and of the held-out video frames alone); top-1
    agreement and accuracy for classifiers."""
    from quant.metrics import outputs_sqnr, top1_agreement

    reference = ws.reference()
    result: dict[str, Any] = {
        "sqnr_db": outputs_sqnr([t for o in reference for t in o], [t for o in outputs for t in o]),
        "video_sqnr_db": None,
        "top1_agreement": None,
        "accuracy": None,
    }
    if video := ws.subject.held_out_video:
        result["video_sqnr_db"] = outputs_sqnr(
            [t for i in video for t in reference[i]], [t for i in video for t in outputs[i]]
        )
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
