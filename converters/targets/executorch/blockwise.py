"""ExecuTorch with XNNPACK's blockwise 4-bit GEMM (qb4w, datatype `qbint4`) for a plan's per-group Linear weights.

XNNPACK takes a blockwise 4-bit weight from torchao's unpacked int4 tensor (`IntxUnpackedToInt8Tensor`, the
form `quantize_(m, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(g)))`
makes, and ExecuTorch's own XNNPACK tests lower): exported, its weight is an int8 constant feeding
`torchao.dequantize_affine` with block size (1, g), which the partitioner reads as per-channel-group 4-bit, and
its input is quantized per token at run time (XNNPACK's qd8-f32-qb4w GEMM). Here that tensor is built from the
plan itself — the plan's integers (`quant.groupwise.quantize_weight_ints`: round-to-nearest on the plan's scales,
which reproduces GPTQ's integers because GPTQ writes its choice back into the float weight) and the plan's
scales — never from torchao's own min-max, so the artifact holds exactly the plan's 4-bit levels.

What XNNPACK itself changes, reported in the facts rather than hidden: it stores block scales as bf16 (the
largest relative change of a plan scale is `scale_bf16_max_rel_change`), and it needs group sizes that are
multiples of 32 and 4-bit symmetric groups. The plan's other layers (int8 or per-channel 4-bit weights) go
through the PT2E `PlanQuantizer` as in `converters.targets.executorch.quantized`; activations are dynamic int8
everywhere, so the reference is the PT2E graph with dynamic activations and the plan's weights.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from converters.artifact import TargetResult
from converters.errors import ConversionError
from converters.quant_lowering import DYNAMIC_REFERENCE, gemm_plan, quant_facts, with_module
from converters.targets.executorch.facts import xnnpack_gemm_dtypes, xnnpack_graphs
from converters.targets.executorch.lower import convert as lower_fp
from converters.unit import DeployUnit
from quant.plan import QuantPlan

XNNPACK_GROUP_MULTIPLE = 32  # XNNPACK's blockwise GEMM refuses other group sizes (node_visitor's check)


def blockwise_layers(plan: QuantPlan) -> list[str]:
    """The plan's per-group layers, checked against what XNNPACK's blockwise GEMM takes.

    ConversionError (naming the layer and the fix) for a per-group conv or matmul, a width other than 4 bits,
    an asymmetric group, or a group size XNNPACK refuses.
    """
    names = plan.grouped_layers()
    for name in names:
        lq = plan.layers[name]
        q = lq.weight
        assert q is not None and q.group_size is not None
        problem = None
        if lq.kind != "linear":
            problem = f"is a per-group {lq.kind}: XNNPACK's blockwise GEMM is for Linear weights only"
        elif q.bits != 4 or (q.quant_min, q.quant_max) != (-8, 7) or not q.symmetric:
            problem = f"has {q.bits}-bit groups over [{q.quant_min}, {q.quant_max}]: XNNPACK's are 4-bit [-8, 7]"
        elif q.group_size % XNNPACK_GROUP_MULTIPLE:
            problem = f"has groups of {q.group_size}: XNNPACK needs a multiple of {XNNPACK_GROUP_MULTIPLE}"
        if problem:
            raise ConversionError(
                f"executorch: plan layer {name!r} {problem}; re-plan it (4-bit groups of 32/64/128) or per-channel"
            )
    return names


@torch.no_grad()
def with_blockwise_weights(module: nn.Module, plan: QuantPlan, names: list[str]) -> nn.Module:
    """A copy of `module` whose Linears `names` hold the plan's 4-bit group integers and scales as torchao's
    unpacked int4 tensors with per-token dynamic int8 activations (what XNNPACK lowers to qb4w GEMMs)."""
    from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
        IntxUnpackedToInt8Tensor,
        IntxUnpackedToInt8TensorActivationQuantization,
    )

    from quant.groupwise import group_scale_tensor, quantize_weight_ints

    copied = copy.deepcopy(module).eval()
    for name in names:
        linear = copied.get_submodule(name)
        q = plan.layers[name].weight
        assert q is not None and q.group_size is not None
        scale = group_scale_tensor(q, tuple(linear.weight.shape)).to(linear.weight.dtype)
        weight = IntxUnpackedToInt8Tensor(
            qdata=quantize_weight_ints(linear.weight, q),
            scale=scale,
            zero_point=torch.zeros_like(scale, dtype=torch.int8),
            target_dtype=torch.int4,
            block_size=(1, q.group_size),
            dtype=linear.weight.dtype,
            activation_quantization=IntxUnpackedToInt8TensorActivationQuantization.INT8_ASYM_PER_TOKEN,
        )
        linear.weight = nn.Parameter(weight, requires_grad=False)
    return copied


def scale_bf16_change(plan: QuantPlan, names: list[str]) -> float:
    """Largest relative change of a plan scale when stored as bf16, as XNNPACK stores blockwise scales."""
    worst = 0.0
    for name in names:
        q = plan.layers[name].weight
        assert q is not None
        scale = torch.tensor(q.scale, dtype=torch.float32)
        change = ((scale.to(torch.bfloat16).float() - scale).abs() / scale).max()
        worst = max(worst, float(change))
    return worst


def held_blockwise_weights(path: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every `qbint4` weight the .pte's XNNPACK delegates hold, read back from the file: (integers (out, in)
    int8 in [-8, 7], scales (out, groups) float32 from their bf16 storage), in graph order.

    XNNPACK packs two 4-bit values a byte, the even column in the low nibble, each offset by 8.
    """
    graphs, constants = xnnpack_graphs(path)
    held = []
    for graph in graphs:
        for value in graph.get("xvalues", []):
            union = value["xvalue_union"]
            tensor = union.get("tensor_value", union)
            if tensor.get("datatype") != "xnn_datatype_qbint4":
                continue
            rows, cols = tensor["dims"]
            key = graph["constant_data"][tensor["constant_buffer_idx"]]["named_key"]
            packed = torch.frombuffer(bytearray(constants[key]), dtype=torch.uint8)
            nibbles = torch.stack([packed & 0xF, packed >> 4], dim=-1).reshape(rows, cols)
            scale_key = graph["constant_data"][union["quant_params"]["scale_buffer_idx"]]["named_key"]
            scales = torch.frombuffer(bytearray(constants[scale_key]), dtype=torch.bfloat16).float()
            held.append((nibbles.to(torch.int8) - 8, scales.reshape(rows, -1)))
    return held


def plan_integers_held(path: Path, module: nn.Module, names: list[str]) -> int:
    """How many of the Linears `names` (torchao int4 weights in `module`) the .pte holds with exactly their
    integers and their scales as bf16; each held weight matches at most one layer."""
    held = held_blockwise_weights(path)
    matched = 0
    for name in names:
        weight = module.get_submodule(name).weight
        ints, scale = weight.qdata, weight.scale.to(torch.bfloat16).float()
        for i, (got_ints, got_scale) in enumerate(held):
            if got_ints.shape == ints.shape and torch.equal(got_ints, ints) and torch.equal(got_scale, scale):
                matched += 1
                del held[i]
                break
    return matched


def lower_blockwise(unit: DeployUnit, plan: QuantPlan, path: Path) -> tuple[TargetResult, nn.Module]:
    """Write the .pte (per-group Linears as qb4w, the other planned layers through PT2E) and return it with
    its reference; ConversionError unless XNNPACK holds every per-group Linear as `qbint4`."""
    from executorch.backends.transforms.duplicate_dynamic_quant_chain import DuplicateDynamicQuantChainPass

    from quant.pt2e import is_int4_linear, quantize_pt2e

    gemms = gemm_plan(plan, unit.module)
    blockwise = blockwise_layers(gemms)
    rest = gemms.subset([name for name in gemms.layers if name not in blockwise])
    module = with_blockwise_weights(unit.module, gemms, blockwise)
    graph = quantize_pt2e(module, unit.example_inputs, rest, activations="dynamic", int4_full_range=True)
    DuplicateDynamicQuantChainPass()(graph)  # as in the per-channel lowering: one dynamic chain per consumer
    # One default partitioner: the per-channel lowering's dynamic-GEMMs-first partitioning (for MobileViT's rank-3
    # conv inputs) made this lowering several times slower on the tiny ViT; a plan that needs it fails loudly here.
    result = lower_fp(with_module(unit, graph), "fp32", path, decompose_norms=False)
    xnn = xnnpack_gemm_dtypes(path)
    held = xnn.get("linear", {}).get("weights", {})
    channel4 = [name for name, lq in rest.layers.items() if is_int4_linear(lq)]
    for kind, wanted in (("qbint4", blockwise), ("qcint4", channel4)):
        if held.get(kind, 0) != len(wanted):
            raise ConversionError(
                f"executorch: the plan has {len(wanted)} Linear layer(s) for XNNPACK {kind} but the written program "
                f"holds {held.get(kind, 0)} {kind} GEMM weight(s) (e.g. {wanted[0] if wanted else '-'!r})"
            )
    same = plan_integers_held(path, module, blockwise)
    if same != len(blockwise):
        raise ConversionError(
            f"executorch: {len(blockwise) - same} of {len(blockwise)} blockwise 4-bit weight(s) in the written "
            "program differ from the plan's integers or scales"
        )
    group_sizes = sorted({gemms.layers[n].weight.group_size for n in blockwise})  # type: ignore[union-attr]
    facts = dict(result["facts"])
    facts["quant"] = quant_facts(
        gemms,
        "executorch",
        "plan's per-group 4-bit Linear weights as torchao unpacked int4 (the plan's integers and scales) → "
        "XNNPACK qb4w GEMMs; other plan weights through PT2E PlanQuantizer; dynamic int8 activations",
        DYNAMIC_REFERENCE,
        blockwise_int4_layers=len(blockwise),
        group_sizes=group_sizes,
        int4_layers=len(channel4),
        int8_layers=len(rest.layers) - len(channel4),
        fp32_layers=sorted(set(plan.layers) - set(gemms.layers)),
        xnnpack_gemms=xnn,
        blockwise_weights_equal_to_plan=same,
        scale_storage="bf16 (XNNPACK stores blockwise scales as bf16)",
        scale_bf16_max_rel_change=scale_bf16_change(gemms, blockwise),
        activations="dynamic int8 (per token into blockwise GEMMs, per tensor elsewhere); plan activation grids unused",
    )
    return TargetResult(inputs=result["inputs"], outputs=result["outputs"], facts=facts), graph
