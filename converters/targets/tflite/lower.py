"""TFLite / LiteRT: `litert_torch.convert(...).export(path)`, loaded back by the LiteRT interpreter.

fp16 means fp16 *weights* (litert-torch's `full_fp16_recipe`, AI Edge Quantizer's float-casting): the file
halves and the CPU upcasts weights to fp32 once at load, while a GPU delegate may compute in fp16. Inputs and
outputs stay fp32 either way.

Attention reaches litert-torch as bmm → softmax → bmm with Kᵀ an explicit TRANSPOSE (`converters.sdpa`): its own
SDPA lowering makes Q·Kᵀ a FULLY_CONNECTED with a run-time weight that XNNPACK does not take.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from torch import nn

from converters.artifact import TargetResult
from converters.sdpa import plain_softmax_sdpa
from converters.targets.tflite.runner import LiteRTRunner
from converters.unit import DeployUnit


class NamedIO(nn.Module):
    """Takes inputs by keyword and returns outputs in a dict, which is how litert-torch names a signature's
    tensors (positional arguments would come out as args_0, args_1, ...)."""

    def __init__(self, module: nn.Module, input_names: tuple[str, ...], output_names: tuple[str, ...]) -> None:
        super().__init__()
        self.module = module
        self.input_names = input_names
        self.output_names = output_names

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.module(*(inputs[n] for n in self.input_names))
        return dict(zip(self.output_names, out if isinstance(out, tuple) else (out,), strict=True))


def litert_module(module: nn.Module, sample_kwargs: dict[str, torch.Tensor]) -> nn.Module:
    """`module` re-traced with every SDPA call in the form LiteRT's XNNPACK delegate runs whole."""
    exported = torch.export.export(module, (), sample_kwargs, strict=False)
    sdpa = plain_softmax_sdpa(explicit_transpose=True)
    return exported.run_decompositions({torch.ops.aten.scaled_dot_product_attention.default: sdpa}).module()


def convert(unit: DeployUnit, precision: str, path: Path) -> TargetResult:
    """Convert and export, then load the file in the LiteRT interpreter to prove it loads and to read its
    real signature (LiteRT narrows int64 inputs to int32, and the record should say so)."""
    import litert_torch

    quant_config = None
    if precision == "fp16":
        from litert_torch.generative.quantize import quant_recipes

        quant_config = quant_recipes.full_fp16_recipe()
    named = NamedIO(unit.module, unit.input_names, unit.output_names).eval()
    kwargs = dict(zip(unit.input_names, unit.example_inputs, strict=True))
    model = litert_torch.convert(litert_module(named, kwargs), sample_kwargs=kwargs, quant_config=quant_config)
    model.export(str(path))

    runner = LiteRTRunner(path, num_threads=1)
    ops = Counter(op["op_name"] for op in runner.op_details())
    return TargetResult(
        inputs=runner.inputs,
        outputs=runner.outputs,
        facts={"tflite_ops": dict(ops.most_common()), "tflite_op_count": sum(ops.values())},
    )
