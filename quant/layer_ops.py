"""The ops fake-quant quantizes, and how it runs one on given (fake-quantized) inputs and weight: shared by
calibration (`quant.fake_quant`), the scale search and the reconstruction passes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quant.modules import MatMul, SmoothedLinear
from quant.plan import LayerKind


def layer_kind(module: nn.Module) -> LayerKind | None:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Conv2d):
        return "conv2d"
    if isinstance(module, MatMul):
        return "matmul"
    return None


def quantizes_output(module: nn.Module) -> bool:
    """Whether calibration gives the layer an output grid (`LayerQuant.output`): every conv but a patch embedding.

    onnxruntime runs a conv as a fast integer kernel only with an int8 output (QLinearConv, kept in NHWC from one
    conv to the next); with a float output it has a slow reference kernel (ConvInteger) or our patch GEMM
    (`converters/targets/onnx/conv_gemm.py`), whose layout ops cost more than they save on a conv stack
    (MobileViT-XXS int8: 2.65x fp32's time that way, 0.85x with output grids, for 3.4 dB of fidelity). A patch
    embedding (kernel = stride > 1, unpadded) is a reshape and one GEMM, which needs no output grid, and its
    output starts a ViT's token stream, where output grids cost most. Linears keep float outputs (QGemm).
    """
    if not isinstance(module, nn.Conv2d):
        return False
    patches = module.kernel_size == module.stride and max(module.kernel_size) > 1
    return not (patches and module.groups == 1 and module.padding in ((0, 0), "valid"))


def layer_inputs(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The tensors that get quantized when `module` is called with `args` (after any SQ-b pre-op)."""
    if isinstance(module, MatMul):
        return args[0], args[1]
    x = args[0]
    return (module.smooth(x),) if isinstance(module, SmoothedLinear) else (x,)


def layer_forward(
    module: nn.Module, kind: LayerKind, inputs: Sequence[Tensor], weight: Tensor | None, bias: Tensor | None = None
) -> Tensor:
    """The op of a quantizable layer on given (possibly fake-quantized) inputs and weight.

    A conv runs its own `forward` with `weight` in place of its parameter: a Conv2d subclass that pads inside
    its forward (EfficientNet's and timm's static "same"-padding convs) keeps its padding, which calling
    `_conv_forward` skipped (the output came out smaller, so the fake-quant model did not run). A plain
    nn.Conv2d takes `_conv_forward` directly, which already applies string padding and `padding_mode`.
    `bias` replaces the layer's own (a conv with an output grid holds it rounded, see `FakeQuantLayer`).
    """
    if kind == "matmul":
        return torch.matmul(inputs[0], inputs[1])
    bias = module.bias if bias is None else bias
    if kind == "linear":
        return F.linear(inputs[0], weight, bias)
    if type(module).forward is nn.Conv2d.forward:
        return module._conv_forward(inputs[0], weight, bias)
    params = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    return torch.func.functional_call(module, params, (inputs[0],))
