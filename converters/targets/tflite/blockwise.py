"""LiteRT blockwise 4-bit FULLY_CONNECTED weights carrying a plan's per-group integers and scales.

LiteRT runs blockwise int4 fully-connected weights (an INT4 weight tensor whose quantization details are
`BlockwiseQuantization`: one fp16 scale tensor per (output row, block), no zero-point), quantizing the
activation to int8 inside the kernel. AI Edge Quantizer writes that form (`add_dynamic_config(..., num_bits=4,
granularity=BLOCKWISE_<g>)`), but from its own min-max scales. So the fp32 .tflite is quantized by AI Edge
Quantizer first, for the layout, and then each blockwise weight's integers and scales are overwritten in place
(same sizes) with the plan's: nearest rounding on the plan's scales, which is GPTQ's choice too, since GPTQ
writes its weights back into the model. Each weight tensor is matched to its plan layer by shape and nearest
values, and after writing the file is read back: every blockwise weight must hold its layer's integers.
litert-torch folds a LayerNorm's gain into the next FULLY_CONNECTED weight (W·diag(γ)): that weight is not the
Linear's, no per-(row, block) scale carries the plan's integers onto it, and the lowering refuses such a model.

What LiteRT changes, in the facts: scales are stored as fp16. Layers of the plan that are not per-group stay
float here (the facts list them): this path carries 4-bit groups only. The reference is the float model with
the plan's dequantized weights; LiteRT's int8 activations are the difference the parity gate allows.
"""

from __future__ import annotations

import copy
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from converters.artifact import TargetResult
from converters.errors import ConversionError
from converters.quant_lowering import gemm_plan, quant_facts
from converters.unit import DeployUnit
from quant.plan import QuantPlan

AEQ_BLOCK_SIZES = (32, 64, 128, 256)  # ai_edge_quantizer.qtyping.QuantGranularity.BLOCKWISE_*
INT4 = 17  # TFLite TensorType INT4
# AI Edge Quantizer's own 4-bit blocks of the Linear's weight land ~20 dB from it; a folded weight lands far below.
MIN_LAYOUT_FIT_DB = 10.0
REFERENCE = "the plan's dequantized weights in the float model (LiteRT quantizes FC inputs to int8 at run time)"


def blockwise_layers(plan: QuantPlan) -> list[str]:
    """The plan's per-group layers; ConversionError unless each is a 4-bit [-8, 7] Linear with one block size
    LiteRT takes (and one size for the whole plan)."""
    names = plan.grouped_layers()
    sizes = {plan.layers[n].weight.group_size for n in names}  # type: ignore[union-attr]
    for name in names:
        lq = plan.layers[name]
        q = lq.weight
        assert q is not None
        if lq.kind != "linear" or q.bits != 4 or (q.quant_min, q.quant_max) != (-8, 7):
            raise ConversionError(
                f"tflite: plan layer {name!r} is a {q.bits}-bit per-group {lq.kind}; LiteRT's blockwise kernel takes "
                "4-bit [-8, 7] Linear weights: re-plan it"
            )
    if len(sizes) > 1 or (sizes and next(iter(sizes)) not in AEQ_BLOCK_SIZES):
        raise ConversionError(
            f"tflite: plan groups of {sorted(sizes)}; LiteRT blockwise takes one block size of "
            f"{'/'.join(map(str, AEQ_BLOCK_SIZES))} per model: re-plan with one of them"
        )
    return names


def tfl_model(path: Path) -> Any:
    """The .tflite as AI Edge Quantizer's object tree (schema `ModelT`)."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    return tfl_flatbuffer_utils.read_model(str(path))


def _fc_blockwise(model: Any) -> list[tuple[int, int]]:
    """(weight tensor, scale tensor) of every FULLY_CONNECTED op reading a blockwise INT4 weight."""
    from ai_edge_litert import schema_py_generated as schema

    found = []
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) != schema.BuiltinOperator.FULLY_CONNECTED:
                continue
            tensor = subgraph.tensors[op.inputs[1]]
            q = tensor.quantization
            blockwise = q is not None and q.detailsType == schema.QuantizationDetails.BlockwiseQuantization
            if tensor.type == INT4 and blockwise:
                found.append((op.inputs[1], q.details.scales))
    return found


def held_blockwise(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every blockwise FULLY_CONNECTED weight of the .tflite: (integers (out, in) int8, scales (out, blocks) f32)."""
    model = tfl_model(path)
    tensors = model.subgraphs[0].tensors
    held = []
    for weight_id, scale_id in _fc_blockwise(model):
        rows, cols = (int(d) for d in tensors[weight_id].shape)
        packed = np.frombuffer(_bytes(path, model, tensors[weight_id].buffer), dtype=np.uint8)
        nibbles = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(-1)[: rows * cols].astype(np.int8)
        ints = np.where(nibbles > 7, nibbles - 16, nibbles).reshape(rows, cols)
        scales = np.frombuffer(_bytes(path, model, tensors[scale_id].buffer), dtype=np.float16).astype(np.float32)
        held.append((ints, scales.reshape(rows, -1)))
    return held


def _bytes(path: Path, model: Any, buffer: int) -> bytes:
    entry = model.buffers[buffer]
    if entry.offset > 1:  # stored after the flatbuffer
        with path.open("rb") as fh:
            fh.seek(entry.offset)
            return fh.read(entry.size)
    return np.asarray(entry.data, dtype=np.uint8).tobytes()


def _file_span(path: Path, buffer: int) -> tuple[int, int]:
    """(file offset, size) of buffer `buffer`'s bytes, inline in the flatbuffer or after it."""
    from ai_edge_litert import schema_py_generated as schema

    data = bytearray(path.read_bytes())
    entry = schema.Model.GetRootAs(data, 0).Buffers(buffer)
    if entry.Offset() > 1:
        return int(entry.Offset()), int(entry.Size())
    vector = entry._tab.Vector(entry._tab.Offset(4))
    return vector, entry.DataLength()


def _pack(ints: np.ndarray) -> bytes:
    """Two signed 4-bit values a byte, the first in the low nibble (AI Edge Quantizer's `pack_data`)."""
    flat = (ints.reshape(-1).astype(np.int16) & 0xF).astype(np.uint8)
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    return (flat[0::2] | (flat[1::2] << 4)).tobytes()


def write_plan_integers(path: Path, module: nn.Module, plan: QuantPlan, names: list[str]) -> int:
    """Overwrite each blockwise FC weight of `path` with its plan layer's integers and fp16 scales; the count."""
    from quant.groupwise import group_scale_tensor, quantize_weight_ints

    model = tfl_model(path)
    tensors = model.subgraphs[0].tensors
    current = held_blockwise(path)
    todo = list(names)
    spans: list[tuple[int, bytes]] = []
    for (weight_id, scale_id), (ints, scales) in zip(_fc_blockwise(model), current, strict=True):
        dequant = torch.from_numpy(ints.astype(np.float32) * np.repeat(scales, ints.shape[1] // scales.shape[1], 1))
        same = [n for n in todo if tuple(module.get_submodule(n).weight.shape) == tuple(ints.shape)]
        if not same:
            raise ConversionError(f"tflite: a blockwise weight of shape {list(ints.shape)} matches no plan layer")
        name = min(same, key=lambda n: float((module.get_submodule(n).weight - dequant).pow(2).sum()))
        todo.remove(name)
        weight = module.get_submodule(name).weight.detach()
        fit = 10 * torch.log10(weight.pow(2).sum() / (weight - dequant).pow(2).sum().clamp(min=1e-30))
        if fit < MIN_LAYOUT_FIT_DB:
            raise ConversionError(
                f"tflite: the converter folded other ops (e.g. a LayerNorm's gain) into the FULLY_CONNECTED weight "
                f"of {name!r} ({float(fit):.1f} dB from the Linear's own weight), so the plan's integers cannot be "
                "written there; convert this plan to executorch or onnx (their 4-bit GEMMs read the Linear's weight)"
            )
        q = plan.layers[name].weight
        assert q is not None
        plan_ints = quantize_weight_ints(weight, q).numpy()
        plan_scales = group_scale_tensor(q, tuple(weight.shape)).numpy().astype(np.float16)
        if plan_scales.shape != scales.shape:
            raise ConversionError(f"tflite: layer {name!r} has {plan_scales.shape} blocks, the file {scales.shape}")
        payloads = ((tensors[weight_id].buffer, _pack(plan_ints)), (tensors[scale_id].buffer, plan_scales.tobytes()))
        for buffer, payload in payloads:
            offset, size = _file_span(path, buffer)
            if size != len(payload):
                raise ConversionError(f"tflite: layer {name!r}: {len(payload)} bytes to write over {size}")
            spans.append((offset, payload))
    with path.open("r+b") as fh:
        for offset, payload in spans:
            fh.seek(offset)
            fh.write(payload)
    return len(names) - len(todo)


@torch.no_grad()
def plan_weights_model(module: nn.Module, plan: QuantPlan, names: list[str]) -> nn.Module:
    """A copy of `module` whose Linears `names` compute with the plan's dequantized weights."""
    from quant.groupwise import fake_quantize_weight

    copied = copy.deepcopy(module).eval()
    for name in names:
        linear = copied.get_submodule(name)
        linear.weight.copy_(fake_quantize_weight(linear.weight, plan.layers[name].weight))
    return copied


def lower_blockwise(unit: DeployUnit, plan: QuantPlan, path: Path) -> tuple[TargetResult, nn.Module]:
    """fp32 .tflite → AI Edge Quantizer blockwise int4 FC layout → the plan's integers and scales written in."""
    from ai_edge_quantizer import qtyping, quantizer

    from converters.targets.tflite.lower import convert as lower_fp
    from converters.targets.tflite.runner import LiteRTRunner
    from quant.groupwise import quantize_weight_ints

    gemms = gemm_plan(plan)
    names = blockwise_layers(gemms)
    block = gemms.layers[names[0]].weight.group_size  # type: ignore[union-attr]
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.tflite"
        lower_fp(unit, "fp32", fp32)
        q = quantizer.Quantizer(str(fp32))
        granularity = getattr(qtyping.QuantGranularity, f"BLOCKWISE_{block}")
        q.add_dynamic_config(".*", "FULLY_CONNECTED", num_bits=4, granularity=granularity)
        result = q.quantize(enable_progress_bar=False, enable_progress_report=False)
        path.unlink(missing_ok=True)
        result.export_model(str(path))
    found = len(_fc_blockwise(tfl_model(path)))
    if found != len(names):
        raise ConversionError(
            f"tflite: the model has {found} blockwise FULLY_CONNECTED weights but the plan groups {len(names)} Linear "
            "layers: plan every Linear per group for LiteRT's blockwise path"
        )
    written = write_plan_integers(path, unit.module, gemms, names)
    want = sorted(
        _pack(quantize_weight_ints(unit.module.get_submodule(n).weight, gemms.layers[n].weight).numpy()) for n in names
    )
    held = sorted(_pack(ints) for ints, _ in held_blockwise(path))  # read back from the written file
    if written != len(names) or held != want:
        raise ConversionError("tflite: the written blockwise weights are not the plan's integers")
    runner = LiteRTRunner(path, num_threads=1)
    facts: dict[str, Any] = {"tflite_ops": dict(Counter(op["op_name"] for op in runner.op_details()).most_common())}
    facts["quant"] = quant_facts(
        gemms,
        "tflite",
        f"AI Edge Quantizer blockwise int4 layout (BLOCKWISE_{block}) with the plan's integers and scales written in",
        REFERENCE,
        blockwise_int4_layers=len(names),
        blockwise_weights_equal_to_plan=written,
        group_sizes=[block],
        scale_storage="fp16 (LiteRT's blockwise scale tensors)",
        float_layers=sorted(set(plan.layers) - set(names)),
        activations="quantized to int8 inside each FULLY_CONNECTED at run time",
    )
    reference = plan_weights_model(unit.module, gemms, names)
    return TargetResult(inputs=runner.inputs, outputs=runner.outputs, facts=facts), reference
