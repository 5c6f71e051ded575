"""The W4 peers, each run as its own documentation runs it, on every Linear (MatMul) weight of the model.

- onnxruntime `matmul_nbits_quantizer.MatMulNBitsQuantizer` on the fp32 ONNX edgevit exports: its default
  (block RTN, here symmetric), `RTNWeightOnlyQuantConfig`, `GPTQWeightOnlyQuantConfig` (fed the calibration
  images) and `HQQWeightOnlyQuantConfig` — each writes `MatMulNBits` ops that onnxruntime runs.
- torchao 0.18 `quantize_` with `IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(g))`
  (weight-only, scored in eager torch) and `Int8DynamicActivationIntxWeightConfig(torch.int4, PerGroup(g))`
  (int8 per-token activations), the latter lowered to ExecuTorch/XNNPACK as ExecuTorch's docs do.
- AI Edge Quantizer `recipe.dynamic_wi4b32_afp32` / `dynamic_wi4b64_afp32` (blockwise 4-bit weights, dynamic
  int8 activations) on fully-connected ops of the fp32 .tflite, run in LiteRT.
- coremltools `palettize_weights` (4-bit k-means LUT per tensor) on the fp16 Core ML program: Core ML cannot
  predict on Linux, so the palettized weights are read back from the saved package, decompressed, and put into
  the torch model (labelled so).

Every peer quantizes the same layers: the model's Linear weights (MatMul with a constant weight in ONNX,
FULLY_CONNECTED in LiteRT, `linear` in Core ML); convolutions and everything else stay float.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

ORT_ALGOS = ("default", "RTN", "GPTQ", "HQQ")
TORCHAO_MODES = ("weight-only", "int8 dynamic activations")


class Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of arrays (one input); re-iterable."""

    def __init__(self, name: str, arrays: Sequence[np.ndarray]) -> None:
        self.name, self.arrays = name, list(arrays)
        self._items = iter([{name: a} for a in self.arrays])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)

    def __iter__(self):  # GPTQ's dataloader iterates a deep copy of the reader
        return iter([{self.name: a} for a in self.arrays])

    def rewind(self) -> None:
        self._items = iter([{self.name: a} for a in self.arrays])


def ort_nbits(fp32: Path, out: Path, algo: str, group_size: int, calib: Sequence[np.ndarray]) -> Path:
    """onnxruntime's `MatMulNBitsQuantizer` with algorithm `algo` at 4 bits, blocks of `group_size`."""
    import onnx
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq

    model = onnx.load(str(fp32))
    configs = {
        "default": lambda: None,
        "RTN": lambda: mnq.RTNWeightOnlyQuantConfig(),
        "GPTQ": lambda: mnq.GPTQWeightOnlyQuantConfig(
            calibration_data_reader=Reader(model.graph.input[0].name, calib), block_size=128
        ),
        "HQQ": lambda: mnq.HQQWeightOnlyQuantConfig(block_size=group_size, bits=4),
    }
    quantizer = mnq.MatMulNBitsQuantizer(
        model, bits=4, block_size=group_size, is_symmetric=True, algo_config=configs[algo]()
    )
    quantizer.process()
    out.unlink(missing_ok=True)
    quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
    return out


def nbits_weight_bytes(path: Path) -> int:
    """Bytes of what the `MatMulNBits` ops store: packed weights, scales and zero-points."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    used = {name for node in model.graph.node if node.op_type == "MatMulNBits" for name in node.input[1:4]}
    return sum(numpy_helper.to_array(inits[n]).nbytes for n in used if n in inits)


def count_ops(path: Path, op_type: str) -> int:
    import onnx

    return sum(node.op_type == op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


@torch.no_grad()
def torchao_int4(module: nn.Module, group_size: int, mode: str) -> nn.Module:
    """A copy of `module` whose Linears are torchao int4 per-group tensors (weight-only or 8da4w)."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    config = (
        IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group_size))
        if mode == "weight-only"
        else Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(group_size))
    )
    quantized = copy.deepcopy(module).eval()
    quantize_(quantized, config)
    return quantized


def torchao_weight_bytes(module: nn.Module) -> int:
    """Bytes of the int4 weights (two a byte) and their scales/zero-points in a torchao-quantized module."""
    total = 0
    for m in module.modules():
        weight = getattr(m, "weight", None)
        if isinstance(m, nn.Linear) and hasattr(weight, "qdata"):
            total += weight.qdata.numel() // 2 + weight.scale.numel() * weight.scale.element_size()
    return total


def aeq_blockwise(fp32: Path, out: Path, group_size: int) -> Path:
    """AI Edge Quantizer's blockwise int4 dynamic recipe on the fully-connected ops of `fp32`."""
    from ai_edge_quantizer import qtyping, quantizer

    q = quantizer.Quantizer(str(fp32))
    q.add_dynamic_config(
        ".*", "FULLY_CONNECTED", num_bits=4, granularity=getattr(qtyping.QuantGranularity, f"BLOCKWISE_{group_size}")
    )
    result = q.quantize(enable_progress_bar=False, enable_progress_report=False)
    out.unlink(missing_ok=True)
    result.export_model(str(out))
    return out


def tflite_int4_bytes(path: Path) -> int:
    """Bytes of the 4-bit constant tensors of a .tflite and their (blockwise) scales."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    model = tfl_flatbuffer_utils.read_model(str(path))
    total = 0
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            data = model.buffers[tensor.buffer].data
            if tensor.type == 17 and data is not None:  # TensorType INT4
                total += len(data)
                q = tensor.quantization
                details = getattr(q, "details", None)
                scales = getattr(details, "scales", None) if details is not None else None
                if scales is not None:  # blockwise: scales are a tensor of their own
                    scale_data = model.buffers[subgraph.tensors[scales].buffer].data
                    total += 0 if scale_data is None else len(scale_data)
                elif q is not None and q.scale is not None:
                    total += 4 * len(q.scale)
    return total


def tflite_op_counts(path: Path) -> dict[str, int]:
    from collections import Counter

    from ai_edge_litert.interpreter import Interpreter

    return dict(Counter(op["op_name"] for op in Interpreter(model_path=str(path))._get_ops_details()))


def coreml_palettize(fp16_package: Path, out: Path) -> Path:
    """coremltools' 4-bit k-means palettization (one LUT per tensor) of the `linear` weights; saves `out`."""
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    model = ct.models.MLModel(str(fp16_package), skip_model_load=True)
    config = cto.OptimizationConfig(op_type_configs={"linear": cto.OpPalettizerConfig(mode="kmeans", nbits=4)})
    palettized = cto.palettize_weights(model, config)
    palettized.save(str(out))
    return out


def coreml_dense_linears(package: Path, module: nn.Module) -> tuple[nn.Module, int, int]:
    """`module` with each Linear weight replaced by the palettized weight the saved package holds for it (its
    LUT op materialized, matched by shape and nearest values); also how many matched and the bytes stored."""
    from converters.targets.coreml.program import gemm_weights, load_program, pymil_ops, stored_bytes

    program = load_program(package)
    held = [w for w in gemm_weights(program) if w.storage.startswith("palettized")]
    dense = []
    for op in pymil_ops(program):
        weight = op.inputs.get("weight") if op.op_type == "linear" else None
        if weight is None or weight.op is None or weight.op.op_type != "constexpr_lut_to_dense":
            continue
        value = weight.op.materialized_val_inference()
        dense.append(torch.from_numpy(np.asarray(value[0] if isinstance(value, tuple) else value, np.float32)))
    copied = copy.deepcopy(module).eval()
    matched = 0
    with torch.no_grad():
        for m in copied.modules():
            same = [i for i, d in enumerate(dense) if isinstance(m, nn.Linear) and d.shape == m.weight.shape]
            if same:
                nearest = min(same, key=lambda i: float((dense[i] - m.weight).pow(2).sum()))
                m.weight.copy_(dense.pop(nearest))
                matched += 1
    return copied, matched, stored_bytes(held)


def as_float_outputs(out: Tensor | tuple | list) -> list[Tensor]:
    return [out.detach().float()] if isinstance(out, Tensor) else [t for o in out for t in as_float_outputs(o)]
