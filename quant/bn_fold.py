"""Fold each eval-mode BatchNorm2d into the Conv2d that feeds it, before anything is quantized.

Why first: every backend (XNNPACK, ORT, Core ML, LiteRT) folds BN into the conv before it quantizes, so
the weight the integer kernel runs is W·γ/σ, not W. Quantizing W and leaving BN in float simulates a model
no phone will run, and hides the real problem of hybrids: BN gains of 10-100× on a few channels that widen
the folded weight's range on exactly those channels. Folding here makes the fake-quant model and the
deployed one quantize the same tensor. LayerNorm and GroupNorm normalise over data seen at run time and
cannot be folded; they stay float (the plan never quantizes them).

Which conv feeds which BN is found by running one example batch with hooks, not by guessing from module
order: a BN folds only when its input *is* the output tensor of a Conv2d, both run exactly once per
forward. A consumer the hooks cannot see (a functional op reading the conv output before the BN) would make
the fold change the model, so the folded model is checked against the original on the example batch.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from quant.errors import QuantError
from quant.fake_quant import Batch, replace_submodule, run_batch
from quant.metrics import flatten_output


def conv_bn_pairs(model: nn.Module, example: Batch) -> list[tuple[str, str]]:
    """(conv name, BatchNorm2d name) for each BN whose input is exactly one Conv2d's output."""
    conv_outputs: dict[int, tuple[str, Tensor]] = {}  # id(tensor) → (conv, tensor kept alive so ids stay unique)
    calls: dict[str, int] = {}
    pairs: list[tuple[str, str]] = []

    def conv_hook(name: str):
        def hook(module: nn.Module, args: tuple, out: Tensor) -> None:
            calls[name] = calls.get(name, 0) + 1
            conv_outputs[id(out)] = (name, out)

        return hook

    def bn_hook(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            calls[name] = calls.get(name, 0) + 1
            source = conv_outputs.get(id(args[0]))
            if source is not None and source[1] is args[0]:
                pairs.append((source[0], name))

        return hook

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook(name)))
        elif isinstance(module, nn.BatchNorm2d):
            handles.append(module.register_forward_pre_hook(bn_hook(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            run_batch(model, example)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [(conv, bn) for conv, bn in pairs if calls[conv] == 1 and calls[bn] == 1]


@torch.no_grad()
def fold_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """W ← W·γ/σ per output channel, b ← (b - μ)·γ/σ + β, in place (σ = sqrt(running_var + eps))."""
    if bn.running_mean is None or bn.running_var is None:
        raise QuantError(f"BatchNorm2d with {bn.num_features} channels keeps no running statistics: cannot fold")
    std = (bn.running_var.to(torch.float64) + bn.eps).sqrt()
    gain = torch.ones_like(std) if bn.weight is None else bn.weight.to(torch.float64)
    shift = torch.zeros_like(std) if bn.bias is None else bn.bias.to(torch.float64)
    factor = gain / std
    bias = torch.zeros_like(std) if conv.bias is None else conv.bias.to(torch.float64)
    weight = conv.weight.to(torch.float64) * factor.view(-1, 1, 1, 1)
    conv.weight.copy_(weight.to(conv.weight.dtype))
    new_bias = ((bias - bn.running_mean.to(torch.float64)) * factor + shift).to(conv.weight.dtype)
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias)
    else:
        conv.bias.copy_(new_bias)


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example: Batch) -> tuple[nn.Module, list[tuple[str, str]]]:
    """An eval-mode copy of `model` with every foldable BN merged into its conv (and replaced by Identity).

    Returns the copy and the (conv, bn) pairs folded. Raises if the copy's output on `example` differs from
    the original's beyond float rounding, which means a fold touched a tensor something else also read.
    """
    folded = copy.deepcopy(model).eval()
    pairs = conv_bn_pairs(folded, example)
    for conv_name, bn_name in pairs:
        fold_into_conv(folded.get_submodule(conv_name), folded.get_submodule(bn_name))
        replace_submodule(folded, bn_name, nn.Identity())
    was_training = model.training
    model.eval()
    try:
        reference = flatten_output(run_batch(model, example))
    finally:
        model.train(was_training)
    for ref, out in zip(reference, flatten_output(run_batch(folded, example)), strict=True):
        tolerance = 1e-4 * max(ref.abs().max().item(), 1.0)
        if (ref - out).abs().max().item() > tolerance:
            raise QuantError(
                f"folding BatchNorm into convs changed the model output by {(ref - out).abs().max().item():.3g}: "
                f"a conv output in {[c for c, _ in pairs]} is also read by something other than its BatchNorm"
            )
    return folded, pairs
