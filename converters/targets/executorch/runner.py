"""The ExecuTorch runtime (portable kernels + XNNPACK), the runner of .pte artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from converters.artifact import TensorSpec
from converters.runtime import prepare_inputs

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
        tensors = [self._from_numpy(x) for x in prepare_inputs(inputs, self.inputs)]
        # The pybindings hand back fresh tensors (checked: a later call does not overwrite an earlier result).
        return tuple(t.numpy() for t in self._method.execute(tensors))


def _et_spec(name: str, info: Any) -> TensorSpec:
    code = int(info.dtype())
    return TensorSpec(name, tuple(int(d) for d in info.sizes()), _ET_SCALAR_TYPES.get(code, f"scalar_type_{code}"))


def load_runner(path: Path, num_threads: int | None = None) -> ExecuTorchRunner:
    """ExecuTorch runtime for `path`."""
    return ExecuTorchRunner(path, num_threads)
