"""ONNX: `torch.onnx.export(dynamo=True)` to one self-contained .onnx, checked and built by onnxruntime.

Only fp32 is offered: onnxruntime's CPU provider lacks fp16 kernels for much of a ViT, and int8 comes from
`quant/` as QDQ on top of this fp32 graph.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from converters.artifact import TargetResult
from converters.errors import ConversionError
from converters.targets.onnx.runner import OnnxRuntimeRunner
from converters.unit import DeployUnit

# Protobuf cannot serialise a message over 2 GiB; above it ONNX needs a side file for the weights.
_PROTOBUF_LIMIT = 2**31


def convert(unit: DeployUnit, precision: str, path: Path) -> TargetResult:
    """Export, then prove the file is usable: the full ONNX checker (with shape inference) and an
    onnxruntime session with all graph optimisations, which fails on anything the optimiser can't build.

    Weights are embedded (external_data=False): tools that copy the .onnx alone (e.g. onnxruntime's
    quant_pre_process) break on a side file, and a model that needs one (over 2 GiB) is no phone model.
    """
    import onnx
    import torch

    weight_bytes = sum(t.numel() * t.element_size() for t in (*unit.module.parameters(), *unit.module.buffers()))
    if weight_bytes >= _PROTOBUF_LIMIT:
        raise ConversionError(
            f"onnx: unit {unit.name!r} holds {weight_bytes / 2**30:.1f} GiB of weights, over the 2 GiB "
            "a single ONNX file can hold; split the unit or quantise it first"
        )
    torch.onnx.export(
        unit.module,
        unit.example_inputs,
        str(path),
        dynamo=True,
        external_data=False,
        input_names=list(unit.input_names),
        output_names=list(unit.output_names),
        verbose=False,
    )
    onnx.checker.check_model(str(path), full_check=True)
    runner = OnnxRuntimeRunner(path, num_threads=1)
    model = onnx.load(str(path))
    ops = Counter(node.op_type for node in model.graph.node)
    return TargetResult(
        inputs=runner.inputs,
        outputs=runner.outputs,
        facts={
            "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
            "ir_version": model.ir_version,
            "onnx_ops": dict(ops.most_common()),
            "onnx_node_count": sum(ops.values()),
        },
    )
