"""Runners: call a converted artifact from Python with numpy arrays, in the unit's input/output order.

The same runners drive converted EfficientTAM units frame after frame in the video tracker, so everything
that costs (loading, session/graph building, delegate setup, name-to-index lookups) happens once in the
constructor and `run` only copies tensors in, invokes, and copies them out. Backends are imported in the
constructors, so importing this module stays cheap.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from converters.artifact import TensorSpec


class Runner(Protocol):
    """A loaded artifact: `run` takes and returns arrays positionally, in the order of the names."""

    target: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    num_threads: int

    def run(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]: ...


class RuntimeUnavailableError(RuntimeError):
    """The artifact is valid but this machine has no runtime that can execute it (e.g. Core ML off macOS)."""


def load_runner(target: str, path: Path, num_threads: int | None = None) -> Runner:
    """Load `path` with the runtime of `target`; `num_threads` None means one thread per available core."""
    from converters.base import target_module

    module = target_module(target)
    if not hasattr(module, "load_runner"):
        raise RuntimeUnavailableError(f"no {target} runtime in this environment")
    return module.load_runner(Path(path), num_threads)


def available_cores() -> int:
    """Cores this process may run on (not the machine's count: containers and taskset narrow it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _prepare(inputs: tuple[np.ndarray, ...], specs: tuple[TensorSpec, ...]) -> list[np.ndarray]:
    """Match the artifact's dtypes (a no-op when they already do) and fail on a wrong count or shape with
    the input's name, which backends otherwise report as an opaque index or a crash."""
    if len(inputs) != len(specs):
        raise ValueError(f"expected {len(specs)} inputs ({', '.join(s.name for s in specs)}), got {len(inputs)}")
    out = []
    for x, spec in zip(inputs, specs, strict=True):
        x = np.ascontiguousarray(x, dtype=spec.dtype)
        if len(x.shape) != len(spec.shape) or any(d >= 0 and d != n for d, n in zip(spec.shape, x.shape, strict=True)):
            raise ValueError(f"input {spec.name!r}: shape {x.shape}, artifact expects {spec.shape}")
        out.append(x)
    return out


_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


class OnnxRuntimeRunner:
    """onnxruntime on the CPU provider with every graph optimisation enabled and a stated thread count."""

    target = "onnx"

    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.num_threads = num_threads or available_cores()
        options.intra_op_num_threads = self.num_threads
        # One graph per unit runs sequentially; inter-op threads would only contend for the same cores.
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = tuple(_ort_spec(a) for a in self.session.get_inputs())
        self.outputs = tuple(_ort_spec(a) for a in self.session.get_outputs())
        self._input_names = [s.name for s in self.inputs]
        self._output_names = [s.name for s in self.outputs]

    def run(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        feed = dict(zip(self._input_names, _prepare(inputs, self.inputs), strict=True))
        return tuple(self.session.run(self._output_names, feed))


def _ort_spec(arg: Any) -> TensorSpec:
    # A symbolic dimension (a string) is recorded as -1; units have static shapes, foreign files may not.
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
    return TensorSpec(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type))


# ExecuTorch reports dtypes as c10::ScalarType codes.
_ET_SCALAR_TYPES = {
    0: "uint8",
    1: "int8",
    2: "int16",
    3: "int32",
    4: "int64",
    5: "float16",
    6: "float32",
    7: "float64",
    11: "bool",
}


class ExecuTorchRunner:
    """The ExecuTorch runtime (portable kernels + XNNPACK) through `executorch.runtime.Runtime`.

    A .pte carries no tensor names, so inputs and outputs are named by position; the artifact records the
    unit's names beside the file. ExecuTorch's thread pool is process-wide: `num_threads` resets it for
    every loaded program, and None leaves it as it is.
    """

    target = "executorch"

    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        if num_threads is not None and num_threads != portable_lib._threadpool_get_thread_count():
            portable_lib._unsafe_reset_threadpool(num_threads)
        self.num_threads = portable_lib._threadpool_get_thread_count()
        program = Runtime.get().load_program(Path(path))
        meta = program.metadata("forward")
        self.inputs = tuple(_et_spec(f"input_{i}", meta.input_tensor_meta(i)) for i in range(meta.num_inputs()))
        self.outputs = tuple(_et_spec(f"output_{i}", meta.output_tensor_meta(i)) for i in range(meta.num_outputs()))
        self._method = program.load_method("forward")
        self._from_numpy = torch.from_numpy

    def run(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        tensors = [self._from_numpy(x) for x in _prepare(inputs, self.inputs)]
        # The pybindings hand back fresh tensors (checked: a later call does not overwrite an earlier result).
        return tuple(t.numpy() for t in self._method.execute(tensors))


def _et_spec(name: str, info: Any) -> TensorSpec:
    code = int(info.dtype())
    return TensorSpec(name, tuple(int(d) for d in info.sizes()), _ET_SCALAR_TYPES.get(code, f"scalar_type_{code}"))


class LiteRTRunner:
    """The LiteRT interpreter (`ai_edge_litert`, with its default XNNPACK delegate).

    Tensors are set and read by index on the interpreter rather than through the signature runner, which
    resizes and re-allocates on every call; the order is the subgraph's, which is the order the converter
    was given (the signature lists names alphabetically, so it cannot be used for order).
    """

    target = "tflite"

    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.num_threads = num_threads or available_cores()
        self._interp = Interpreter(model_path=str(path), num_threads=self.num_threads)
        signatures = self._interp.get_signature_list()
        if len(signatures) != 1:
            raise ValueError(f"expected one signature in {path}, found {sorted(signatures)}")
        self._interp.allocate_tensors()
        sig = self._interp.get_signature_runner()
        in_names = {d["index"]: name for name, d in sig.get_input_details().items()}
        out_names = {d["index"]: name for name, d in sig.get_output_details().items()}
        # A live signature runner holds a reference the interpreter counts as "unsafe to invoke".
        del sig
        in_details = self._interp.get_input_details()
        out_details = self._interp.get_output_details()
        self.inputs = tuple(_litert_spec(in_names[d["index"]], d) for d in in_details)
        self.outputs = tuple(_litert_spec(out_names[d["index"]], d) for d in out_details)
        self._in_idx = [d["index"] for d in in_details]
        self._out_idx = [d["index"] for d in out_details]

    def run(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        for idx, x in zip(self._in_idx, _prepare(inputs, self.inputs), strict=True):
            self._interp.set_tensor(idx, x)
        self._interp.invoke()
        return tuple(self._interp.get_tensor(idx) for idx in self._out_idx)


def _litert_spec(name: str, detail: dict[str, Any]) -> TensorSpec:
    return TensorSpec(name, tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"]).name)


class CoreMLRunner:
    """Core ML prediction through coremltools, which exists only on macOS (the farm's mac hosts).

    Off macOS the constructor raises RuntimeUnavailableError, which parity turns into a note on the artifact.
    """

    target = "coreml"

    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        if platform.system() != "Darwin":
            raise RuntimeUnavailableError(f"Core ML prediction needs macOS (this is {platform.system()})")
        import coremltools as ct

        from converters.coreml_target import feature_specs

        # Core ML schedules its own threads and compute units; the count is recorded as unknown (0).
        self.num_threads = 0
        self._model = ct.models.MLModel(str(path))
        spec = self._model.get_spec()
        self.inputs = feature_specs(spec.description.input)
        self.outputs = feature_specs(spec.description.output)

    def run(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        feed = {s.name: x for s, x in zip(self.inputs, _prepare(inputs, self.inputs), strict=True)}
        result = self._model.predict(feed)
        return tuple(np.asarray(result[s.name]) for s in self.outputs)
