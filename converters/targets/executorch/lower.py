"""ExecuTorch: torch.export → XNNPACK partitioner → .pte, with a report of what XNNPACK did not take.

Anything the partitioner leaves out runs on ExecuTorch's portable (reference) kernels and splits the graph
into several delegate calls; on a ViT that is the usual reason a .pte is slower than expected, so the
report lists the op kinds left out and the number of delegated subgraphs.

scaled_dot_product_attention is decomposed here into bmm → softmax → bmm before ExecuTorch sees it
(`converters.sdpa`: ExecuTorch's own "safe" softmax leaves ops XNNPACK does not take).

LayerNorm is rewritten for XNNPACK, which has no layer_norm: means over a [1, rows, C, 1] view (the 4-D
innermost-dims mean XNNPACK takes), subtract, square, rsqrt — otherwise every norm runs on the portable
kernels and splits the graph in two (float lowering only, see `convert`).

fp16 runs the module in half precision (XNNPACK has fp16 kernels for the ops it delegates) but keeps the
artifact's inputs and outputs fp32, casting at the edges: Java/Kotlin and Swift apps have no convenient
half-float arrays, and the casts cost nothing next to the model. LayerNorm/GroupNorm modules stay fp32:
ExecuTorch 1.5.1's (undelegated) fp16 layer_norm kernel is wrong for rows of 256+ elements (measured: SQNR
-6 to 5 dB at 256-768 vs 71 dB at <=192; a ViT-S/16 comes out at 1.7 dB), and XNNPACK does not take
layer_norm at any precision, so computing it in fp32 costs two casts per norm. A norm written with
F.layer_norm in model code is not caught by this; the parity gate is what stops such an artifact.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from torch import nn

from converters.artifact import TargetResult, TensorSpec
from converters.sdpa import plain_softmax_sdpa
from converters.targets.executorch.runner import ExecuTorchRunner
from converters.unit import DeployUnit

# Bookkeeping nodes the delegation report counts but which are not computation.
_NOT_OPS = {"getitem"}


_FP32_NORMS = (nn.LayerNorm, nn.GroupNorm)


class _Fp32Norm(nn.Module):
    """A normalisation layer kept in fp32 inside a half-precision model."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.float()).to(x.dtype)


def _layer_norm_4d(
    x: torch.Tensor,
    normalized_shape: list[int],
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    cudnn_enable: bool = True,
) -> torch.Tensor:
    """`layer_norm` as ops XNNPACK delegates (its mean.dim takes only dims 2, 3 of a 4-D tensor)."""
    rows = x.reshape(1, -1, math.prod(normalized_shape), 1)
    centred = rows - rows.mean(dim=(2, 3), keepdim=True)
    rstd = torch.rsqrt((centred * centred).mean(dim=(2, 3), keepdim=True) + eps)
    out = (centred * rstd).reshape(x.shape)
    if weight is not None:
        out = out * weight
    return out if bias is None else out + bias


class _HalfCompute(nn.Module):
    """Runs a half-precision copy of `module` (norms excepted) behind fp32 inputs and outputs."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        half = copy.deepcopy(module).half()
        for name, orig in module.named_modules():
            if not isinstance(orig, _FP32_NORMS):
                continue
            kept = _Fp32Norm(copy.deepcopy(orig))  # from the fp32 original: no round trip through fp16
            if not name:
                half = kept
                break
            parent, _, attr = name.rpartition(".")
            setattr(half.get_submodule(parent), attr, kept)
        self.module = half

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.module(*(x.half() if x.is_floating_point() else x for x in inputs))
        out = out if isinstance(out, tuple) else (out,)
        return tuple(o.float() if o.is_floating_point() else o for o in out)


def convert(
    unit: DeployUnit, precision: str, path: Path, *, decompose_norms: bool = True, partitioners: list | None = None
) -> TargetResult:
    """Lower with `to_edge_transform_and_lower` and write the .pte; the program is then loaded by the
    ExecuTorch runtime to prove it loads and to read its real input/output signature.

    `decompose_norms` False keeps layer_norm whole (the quantized lowering: with dynamic int8 around them the
    rewritten norms made XNNPACK fail shape propagation at run time, xnn_status_invalid_parameter).
    `partitioners` replaces the one default `XnnpackPartitioner` (the quantized lowering partitions its
    dynamically quantized GEMMs first, see `converters.targets.executorch.quantized`)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    module = unit.module if precision == "fp32" else _HalfCompute(unit.module)
    table = {torch.ops.aten.scaled_dot_product_attention.default: plain_softmax_sdpa()}
    if decompose_norms:
        table[torch.ops.aten.layer_norm.default] = _layer_norm_4d
    exported = torch.export.export(module, unit.example_inputs, strict=False).run_decompositions(table)
    edge = to_edge_transform_and_lower(exported, partitioner=partitioners or [XnnpackPartitioner()])
    info = get_delegation_info(edge.exported_program().graph_module)
    program = edge.to_executorch()
    with path.open("wb") as fh:
        program.write_to_file(fh)

    runner = ExecuTorchRunner(path)
    undelegated = {
        op: b.non_delegated
        for op, b in sorted(info.delegation_by_operator.items())
        if b.non_delegated and op not in _NOT_OPS
    }
    return TargetResult(
        inputs=_named(runner.inputs, unit.input_names),
        outputs=_named(runner.outputs, unit.output_names),
        facts={
            "delegate": "XnnpackBackend",
            "delegated_subgraphs": info.num_delegated_subgraphs,
            "delegated_nodes": info.num_delegated_nodes,
            "undelegated_nodes": sum(undelegated.values()),
            "undelegated_ops": undelegated,
        },
    )


def _named(specs: tuple[TensorSpec, ...], names: tuple[str, ...]) -> tuple[TensorSpec, ...]:
    """Give the .pte's positional tensors the unit's names (a count mismatch is left to the name check)."""
    if len(specs) != len(names):
        return specs
    return tuple(TensorSpec(n, s.shape, s.dtype) for s, n in zip(specs, names, strict=True))
