"""The LiteRT interpreter, the runner of .tflite artifacts; it also lists the flatbuffer's ops for the facts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from converters.artifact import TensorSpec
from converters.runtime import available_cores, prepare_inputs


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
        self.interpreter = Interpreter(model_path=str(path), num_threads=self.num_threads)
        signatures = self.interpreter.get_signature_list()
        if len(signatures) != 1:
            raise ValueError(f"expected one signature in {path}, found {sorted(signatures)}")
        self.interpreter.allocate_tensors()
        sig = self.interpreter.get_signature_runner()
        in_names = {d["index"]: name for name, d in sig.get_input_details().items()}
        out_names = {d["index"]: name for name, d in sig.get_output_details().items()}
        # A live signature runner holds a reference the interpreter counts as "unsafe to invoke".
        del sig
        in_details = self.interpreter.get_input_details()
        out_details = self.interpreter.get_output_details()
        self.inputs = tuple(_litert_spec(in_names[d["index"]], d) for d in in_details)
        self.outputs = tuple(_litert_spec(out_names[d["index"]], d) for d in out_details)
        self._in_idx = [d["index"] for d in in_details]
        self._out_idx = [d["index"] for d in out_details]
        self._in_q = [_affine(d) for d in in_details]
        self._out_q = [_affine(d) for d in out_details]

    def run(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        """Float inputs go into a quantized input through its scale and zero-point, and quantized outputs come
        back dequantized, so a fully integer .tflite is driven like its float model (integer inputs pass as
        they are)."""
        inputs = tuple(_quantize(x, q) for x, q in zip(inputs, self._in_q, strict=False))
        for idx, x in zip(self._in_idx, prepare_inputs(inputs, self.inputs), strict=True):
            self.interpreter.set_tensor(idx, x)
        self.interpreter.invoke()
        outputs = zip(self._out_idx, self._out_q, strict=True)
        return tuple(_dequantize(self.interpreter.get_tensor(idx), q) for idx, q in outputs)

    def op_details(self) -> list[dict[str, Any]]:
        """The flatbuffer's operators (name, input/output tensor indices) before delegation."""
        return self.interpreter._get_ops_details()  # LiteRT's only op listing is this private method


def _affine(detail: dict[str, Any]) -> tuple[float, int, np.dtype] | None:
    """(scale, zero-point, integer dtype) of a per-tensor quantized I/O tensor; None for a plain one (LiteRT
    reports scale 0 there)."""
    scale, zero_point = detail["quantization"]
    dtype = np.dtype(detail["dtype"])
    return (float(scale), int(zero_point), dtype) if scale and np.issubdtype(dtype, np.integer) else None


def _quantize(x: np.ndarray, q: tuple[float, int, np.dtype] | None) -> np.ndarray:
    x = np.asarray(x)
    if q is None or not np.issubdtype(x.dtype, np.floating):
        return x
    scale, zero_point, dtype = q
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, q: tuple[float, int, np.dtype] | None) -> np.ndarray:
    if q is None:
        return y
    scale, zero_point, _ = q
    return ((y.astype(np.float32) - zero_point) * np.float32(scale)).astype(np.float32)


def _litert_spec(name: str, detail: dict[str, Any]) -> TensorSpec:
    return TensorSpec(name, tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"]).name)


def load_runner(path: Path, num_threads: int | None = None) -> LiteRTRunner:
    """LiteRT interpreter for `path`."""
    return LiteRTRunner(path, num_threads)
