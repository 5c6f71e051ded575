"""onnxruntime on the CPU provider, the runner of .onnx artifacts (parity here, timing in the benchmarks)."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from converters.artifact import TensorSpec
from converters.runtime import available_cores, prepare_inputs

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


ALLOW_SPINNING = False
IO_BINDING = False


class OnnxRuntimeRunner:
    """onnxruntime on the CPU provider with every graph optimisation enabled and a stated thread count.

    `allow_spinning`: whether the intra-op pool's idle threads busy-wait for the next op
    ("session.intra_op.allow_spinning"); off unless asked. Measured on the EfficientTAM-Ti 512 tracker (bikes.mp4,
    fp32 ONNX units, 2-core machine shared at load ~3, trackers round-robin; benchmarks/results/tracker_fps.md):
    2 threads spinning took 1672 ms a frame, 2 threads not spinning 971 ms (1.7x faster); at 1 thread the pool
    has no idle thread to spin (898 vs 823 ms, noise); eager torch took 1050 (1 thread) and 1190 ms (2 threads).
    A spinning pool burns the core that the next unit, the tracker's own Python or a neighbour process needs,
    so on a small shared machine it only loses.

    `io_binding`: inputs are bound where they lie and each output is written by the runtime straight into a
    fresh array this runner hands back, instead of `session.run` allocating its own and copying it into numpy
    (a fresh array per call, not a reused one: a caller such as the tracker may still hold the previous
    frame's outputs). The tracker then passes a frame's features from unit to unit without a copy
    (torch.from_numpy / Tensor.numpy share memory). Off unless asked: on the EfficientTAM-Ti 512 units
    (benchmarks/results/tracker_fps.md, interleaved calls on a loaded 2-core machine) it saved nothing — the
    largest output is 4 MB, a copy of well under a millisecond beside 20-550 ms calls, and the medians came out
    0.9 ms faster to 26 ms slower, within the noise.
    """

    target = "onnx"

    def __init__(
        self,
        path: Path,
        num_threads: int | None = None,
        allow_spinning: bool = ALLOW_SPINNING,
        io_binding: bool = IO_BINDING,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.num_threads = num_threads or available_cores()
        options.intra_op_num_threads = self.num_threads
        # One graph per unit runs sequentially; inter-op threads would only contend for the same cores.
        options.inter_op_num_threads = 1
        self.allow_spinning = allow_spinning
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = tuple(_ort_spec(a) for a in self.session.get_inputs())
        self.outputs = tuple(_ort_spec(a) for a in self.session.get_outputs())
        self._input_names = [s.name for s in self.inputs]
        self._output_names = [s.name for s in self.outputs]
        # Binding needs every output's shape and dtype up front; a foreign file with symbolic dims runs plainly.
        self.io_binding = io_binding and all(
            min(s.shape, default=0) >= 0 and s.dtype in _ORT_TYPES.values() for s in self.outputs
        )

    def run(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        arrays = prepare_inputs(inputs, self.inputs)
        if not self.io_binding:
            return tuple(self.session.run(self._output_names, dict(zip(self._input_names, arrays, strict=True))))
        binding = self.session.io_binding()
        for name, x in zip(self._input_names, arrays, strict=True):
            binding.bind_cpu_input(name, x)
        outputs = tuple(np.empty(s.shape, dtype=s.dtype) for s in self.outputs)
        for spec, out in zip(self.outputs, outputs, strict=True):
            binding.bind_output(spec.name, "cpu", 0, out.dtype, out.shape, out.ctypes.data)
        self.session.run_with_iobinding(binding)
        return outputs


def _ort_spec(arg: Any) -> TensorSpec:
    # A symbolic dimension (a string) is recorded as -1; units have static shapes, foreign files may not.
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
    return TensorSpec(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type))


def load_runner(path: Path, num_threads: int | None = None) -> OnnxRuntimeRunner:
    """onnxruntime session for `path`."""
    return OnnxRuntimeRunner(path, num_threads)


def optimized_op_counts(path: Path) -> Counter[str]:
    """Op kinds onnxruntime actually runs after all its CPU graph optimisations: where QDQ became int8 kernels (or
    did not). The optimised graph is saved by onnxruntime itself and read back with onnx."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3  # the "hardware-specific optimisations" warning is expected here
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return Counter(node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node)
