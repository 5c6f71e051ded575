"""The peers, run the way their own documentation runs them, on the suite's calibration images.

- onnxruntime `quantize_static`: ORT's recommended `quant_pre_process` first, then QDQ with per-channel int8
  weights and uint8 activations (what its x86 kernels want), with each of its calibrators (MinMax, Entropy,
  Percentile), on every op type (its default) and on MatMul/Conv only. Calibration runs once per calibrator and
  op set; other bit-widths reuse ORT's own calibration cache.
- ExecuTorch's `XNNPACKQuantizer` (PT2E) with `get_symmetric_quantization_config(is_per_channel=True)`: static
  activations observed by its histogram observer. Other bit-widths narrow its integer ranges (int8 storage):
  the PT2E graph simulates them, but XNNPACK has no static 4/6-bit kernels, so only W8A8 is lowered to a .pte.
- AI Edge Quantizer: its static recipe (`add_static_config`, all supported ops, min/max) applied to the fp32
  .tflite edgevit's converter writes, and the same restricted to fully-connected / conv ops.

Bit-widths a peer cannot express are answered by `unsupported_*` with the reason, taken from the peer's own
API where it can be (its list of integer types), so the table says so instead of leaving a hole.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

ORT_CALIBRATORS = ("MinMax", "Entropy", "Percentile")
ORT_OP_SETS: dict[str, tuple[str, ...] | None] = {"all ops": None, "MatMul/Conv": ("MatMul", "Conv", "Gemm")}
AEQ_OP_SETS: dict[str, tuple[str, ...] | None] = {
    "recipe, all ops": None,
    "FC/Conv only": ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D"),
}
_INT_WEIGHT_DTYPES = {"int8": 8, "uint8": 8, "int4": 4, "uint4": 4}


# ---------------------------------------------------------------------------------------------- onnxruntime


def ort_integer_bits() -> set[int]:
    """The integer widths onnxruntime's `QuantType` offers (e.g. 4, 8, 16), read from the enum itself."""
    from onnxruntime.quantization import QuantType

    return {int(m.group(1)) for t in QuantType if (m := re.fullmatch(r"QU?Int(\d+)", t.name))}


def unsupported_ort(weight_bits: int, act_bits: int) -> str | None:
    """Why onnxruntime cannot quantize at these bits, or None when it can."""
    held = ort_integer_bits()
    missing = sorted({weight_bits, act_bits} - held)
    if not missing:
        return None
    return f"onnxruntime QuantType has {'/'.join(map(str, sorted(held)))}-bit integers only: no {missing[0]}-bit type"


def ort_preprocess(fp32: Path, out: Path) -> tuple[Path, str]:
    """ORT's recommended pre-processing (shape inference + graph optimisation); the raw model if it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(fp32), str(out))
    except Exception as exc:  # the peer's own step: its failure is a fact to report, not a crash
        return fp32, f"quant_pre_process failed ({_one_line(exc)}); quantized the raw export"
    return out, "after quant_pre_process"


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of arrays (one input)."""

    def __init__(self, name: str, arrays: Sequence[np.ndarray]) -> None:
        self._items = iter([{name: a} for a in arrays])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def ort_static(
    model: Path,
    out: Path,
    calib: Sequence[np.ndarray],
    calibrator: str,
    op_set: str,
    weight_bits: int,
    cache_dir: Path,
) -> Path:
    """onnxruntime `quantize_static`, QDQ, per-channel weights, uint8 activations; writes and returns `out`.

    The calibration cache is keyed by calibrator and op set (the all-ops cache covers the MatMul/Conv one, so
    it is reused when present): a second bit-width costs no second calibration.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    weight_type = {8: QuantType.QInt8, 4: QuantType.QInt4}[weight_bits]
    cache = cache_dir / f"ort-calib-{calibrator}-{op_set.replace('/', '_').replace(' ', '_')}.json"
    superset = cache_dir / f"ort-calib-{calibrator}-all_ops.json"
    if not cache.exists() and superset.exists():
        shutil.copy(superset, cache)
    input_name = onnx.load(str(model), load_external_data=False).graph.input[0].name
    quantize_static(
        str(model),
        str(out),
        _Reader(input_name, calib),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(ORT_OP_SETS[op_set]) if ORT_OP_SETS[op_set] else None,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=weight_type,
        calibrate_method=getattr(CalibrationMethod, calibrator),
        calibration_cache_path=cache,
    )
    return out


def onnx_weight_bytes(path: Path) -> int:
    """Bytes of the integer weights a QDQ model stores (initializers feeding DequantizeLinear, biases excluded)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        tensor = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if tensor is None or len(tensor.dims) == 0:
            continue
        bits = _INT_WEIGHT_DTYPES.get(helper.tensor_dtype_to_np_dtype(tensor.data_type).name)
        if bits is None and tensor.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
            bits = 4
        if bits is not None:
            total += int(np.prod(tensor.dims)) * bits // 8
    return total


# -------------------------------------------------------------------------------------------------- XNNPACK


def unsupported_xnnpack_lowering(weight_bits: int, act_bits: int) -> str | None:
    """Why a static XNNPACK .pte cannot hold these bits (its static GEMMs read int8 only)."""
    if (weight_bits, act_bits) == (8, 8):
        return None
    return "XNNPACK's static quantized GEMMs take int8 weights and activations only: simulated in PT2E, not lowered"


def xnnpack_config(weight_bits: int, act_bits: int) -> Any:
    """`get_symmetric_quantization_config(is_per_channel=True)`, with its integer ranges narrowed below 8 bits."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    if max(weight_bits, act_bits) > 8:
        raise ValueError("XNNPACKQuantizer stores int8: at most 8 bits")
    w_max, a_max = 2 ** (weight_bits - 1) - 1, 2 ** (act_bits - 1) - 1
    return get_symmetric_quantization_config(
        is_per_channel=True, act_qmin=-a_max - 1, act_qmax=a_max, weight_qmin=-w_max, weight_qmax=w_max
    )


@torch.no_grad()
def xnnpack_static(
    module: nn.Module, example: Tensor, calib: Sequence[Tensor], weight_bits: int, act_bits: int
) -> torch.fx.GraphModule:
    """ExecuTorch's default static PT2E flow: export, `XNNPACKQuantizer`, calibrate, convert."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph = torch.export.export(module.eval(), (example,), strict=False).module()
    prepared = prepare_pt2e(graph, XNNPACKQuantizer().set_global(xnnpack_config(weight_bits, act_bits)))
    for x in calib:
        prepared(x)
    converted = allow_exported_model_train_eval(convert_pt2e(prepared))
    converted.eval()  # switches the graph's ops to eval; PT2E's patched eval() returns None, so not chained
    for module in converted.modules():  # ... but leaves the flag the converters check for eval mode set
        module.training = False
    return converted


def pt2e_weight_bytes(graph: torch.fx.GraphModule) -> int:
    """Bytes of the int8 constants a converted PT2E graph holds (its quantized weights, stored as int8)."""
    total = 0
    for node in graph.graph.nodes:
        if node.op == "get_attr":
            value = graph
            for part in node.target.split("."):
                value = getattr(value, part)
            if isinstance(value, Tensor) and value.dtype in (torch.int8, torch.uint8) and value.numel() > 1:
                total += value.numel()
    return total


# ---------------------------------------------------------------------------------------- AI Edge Quantizer


def unsupported_aeq(weight_bits: int, act_bits: int) -> str | None:
    """Why AI Edge Quantizer's static mode cannot take these bits: its own check, asked without quantizing."""
    from ai_edge_quantizer import recipe_manager

    try:
        recipe_manager.RecipeManager().add_static_config(".*", "*", act_bits, weight_bits)
    except ValueError as exc:
        return f"AI Edge Quantizer: {_one_line(exc)}"
    return None


def tflite_op_counts(path: Path) -> Counter[str]:
    from ai_edge_litert.interpreter import Interpreter

    return Counter(op["op_name"] for op in Interpreter(model_path=str(path))._get_ops_details())


def aeq_static(
    fp32: Path, out: Path, calib: Sequence[np.ndarray], op_set: str, weight_bits: int, act_bits: int
) -> Path:
    """AI Edge Quantizer's static int recipe on `fp32` (all ops, or only the GEMM op kinds the model has)."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer

    signatures = Interpreter(model_path=str(fp32)).get_signature_list()
    signature, io = next(iter(signatures.items()))
    q = quantizer.Quantizer(str(fp32))
    ops = AEQ_OP_SETS[op_set]
    if ops is None:
        q.add_static_config(".*", "*", activation_num_bits=act_bits, weight_num_bits=weight_bits)
    else:
        present = tflite_op_counts(fp32)
        for op in (o for o in ops if present[o]):
            q.add_static_config(".*", op, activation_num_bits=act_bits, weight_num_bits=weight_bits)
    calibration = q.calibrate({signature: [{io["inputs"][0]: x} for x in calib]}, num_threads=1)
    result = q.quantize(calibration, enable_progress_bar=False, enable_progress_report=False)
    out.unlink(missing_ok=True)
    result.export_model(str(out))
    return out


class FloatIO:
    """A LiteRT runner taking and returning floats for a model whose inputs/outputs are integers.

    AI Edge Quantizer's all-ops static recipe makes a fully integer model, int8 image in and int8 logits out.
    An app quantizes its input and dequantizes the outputs with each tensor's own scale and zero-point; so does
    this wrapper (fed floats as they are, the runner would cast them to int8 and return raw integers).
    """

    def __init__(self, runner: Any, path: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(path))
        self._runner = runner
        self._in = [d["quantization"] for d in interp.get_input_details()]
        self._out = [d["quantization"] for d in interp.get_output_details()]
        self.target, self.inputs, self.outputs = runner.target, runner.inputs, runner.outputs
        self.num_threads = runner.num_threads

    def run(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        quantized = [_quantize(x, q, spec.dtype) for x, q, spec in zip(inputs, self._in, self.inputs, strict=True)]
        outputs = self._runner.run(*quantized)
        return tuple(_dequantize(y, q) for y, q in zip(outputs, self._out, strict=True))


def float_io(runner: Any, path: Path) -> Any:
    """`runner` itself when the model's inputs and outputs are float, else a `FloatIO` around it."""
    floats = ("float32", "float16")
    if all(s.dtype in floats for s in (*runner.inputs, *runner.outputs)):
        return runner
    return FloatIO(runner, path)


def _quantize(x: np.ndarray, q: tuple[float, int], dtype: str) -> np.ndarray:
    scale, zero = q
    if not np.issubdtype(np.dtype(dtype), np.integer) or not scale:
        return x
    info = np.iinfo(np.dtype(dtype))
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, q: tuple[float, int]) -> np.ndarray:
    scale, zero = q
    return (y.astype(np.float32) - zero) * scale if scale and np.issubdtype(y.dtype, np.integer) else y


def tflite_weight_bytes(path: Path) -> int:
    """Bytes of the integer constant tensors (int8/uint8/int4) a .tflite stores: its quantized weights."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    int_types = {3, 9, 17}  # TensorType UINT8, INT8, INT4 in the TFLite schema
    model = tfl_flatbuffer_utils.read_model(str(path))
    total = 0
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            data = model.buffers[tensor.buffer].data
            if tensor.type in int_types and data is not None and len(data) > 1:
                total += len(data)
    return total


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 240 else text[:237] + "..."
