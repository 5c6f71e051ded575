"""What a quantized layer really costs on each target: the bytes its artifact stores for that weight.

Why not `numel · bits / 8`: every target stores more than the packed integers, and not always packed. An ONNX
int8 Linear is a DequantizeLinear of int8 weights with a float32 scale and an int8 zero point per output channel
(a conv is written as patches × the same int8 weights; a depthwise one stays a ConvInteger with one zero point,
rescaled by a float32 per-channel Mul); onnxruntime's MatMulNBits packs group-wise 4-bit Linears two to a byte
with a float32 scale per block. Any other narrow weight (a conv, a per-channel grid) ONNX holds on its grid in
int8 storage: it saves nothing there, so mixed precision never buys it. XNNPACK (ExecuTorch) keeps float32
per-channel scales, packs 4-bit Linear weights but keeps 4-bit conv weights in int8 storage, and its blockwise
4-bit scales are bf16. LiteRT stores float32 scales and int64 zero points. Core ML stores fp16 scales, and 6-bit
weights as a palette (6-bit indices into an int8 LUT). A budget held to the packed payload alone is exceeded by
the artifact (by ~5 bytes per output channel on ONNX, 8-16 % of a small ViT's layers).

The costs are computed from the layer's own qparams (how many scales, per channel or per group), so the grid
the plan chose is the grid that is costed. Bias is not counted (it is float or int32 on every target, whatever
the bits). A width the target does not hold gives None: not a candidate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from quant.plan import LayerQuant, QuantPlan

# Bytes per scale / zero point each target stores for a weight's qparams.
_SCALE_BYTES = {"onnx": 4, "executorch": 4, "tflite": 4, "coreml": 2}
_ZERO_BYTES = {"onnx": 1, "executorch": 0, "tflite": 8, "coreml": 0}
_PALETTE_LUT = 64  # Core ML's 6-bit palette: 2^6 int8 entries per output channel (before iOS 26)


def _packed(numel: int, bits: int) -> int:
    return math.ceil(numel * bits / 8)


def weight_bytes(layer: LayerQuant, target: str, held: Iterable[int] | None = None) -> int | None:
    """Bytes `target`'s artifact stores for `layer`'s weight (0 for a weightless matmul), None if the target
    cannot hold its width. `held`: the widths the target holds (default: any)."""
    q = layer.weight
    if q is None:
        return 0
    if held is not None and q.bits not in set(held):
        return None
    if target not in _SCALE_BYTES:
        raise ValueError(f"no storage model for target {target!r}")
    numel = layer.weight_numel
    out = layer.weight_shape[0]
    scales = len(q.scale) * _SCALE_BYTES[target]
    if target == "onnx":
        if q.bits == 8 or q.granularity != "per_group":  # only group-wise Linears become MatMulNBits
            # Any other narrow weight is held on its grid in int8 storage, and costs what int8 does.
            # A conv is written as patches × int8 weights (a GEMM, as a Linear) unless depthwise, which stays a
            # ConvInteger with one zero point (one input channel per weight row is the depthwise sign here).
            depthwise = layer.kind == "conv2d" and layer.weight_shape[1] == 1
            zeros = 1 if depthwise else len(q.zero_point)
            return numel + scales + zeros
        # MatMulNBits: each row's K padded to whole blocks, two 4-bit values a byte; zero points packed too
        # (omitted for symmetric weights, whose implied zero point is the mid-level).
        block = q.group_size or numel // out
        blocks = math.ceil((numel // out) / block)
        zeros = 0 if q.symmetric else out * math.ceil(blocks * q.bits / 8)
        return out * blocks * _packed(block, q.bits) + out * blocks * 4 + zeros
    if target == "executorch":
        if q.bits == 8 or layer.kind != "linear":
            return numel + scales  # 4-bit conv weights are held in int8 storage
        per_block = 2 if q.granularity == "per_group" else 4  # qb4w scales are bf16, qc4w float32
        return _packed(numel, q.bits) + len(q.scale) * per_block
    if target == "tflite":
        return numel + scales + len(q.zero_point) * _ZERO_BYTES[target]
    # coreml: linear int8/int4 (constexpr_blockwise_shift_scale), 6-bit palette
    if q.bits == 6:
        return _packed(numel, 6) + out * _PALETTE_LUT + scales
    return _packed(numel, q.bits) + scales


def plan_bytes(plan: QuantPlan, target: str) -> int:
    """Bytes `target`'s artifact stores for every planned weight."""
    total = 0
    for layer in plan.layers.values():
        size = weight_bytes(layer, target)
        total += size or 0
    return total


def payload_bytes(layer: LayerQuant) -> int:
    """The packed integer payload alone (`numel · bits / 8`): the old proxy, kept for comparison."""
    return layer.weight_bytes
