"""What a pruning budget and report count: parameters, FLOPs of one call, and output fidelity (SQNR)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils import flop_counter

Batch = tuple[Tensor, ...]


def _cpu_sdpa_flops(query: Sequence[int], key: Sequence[int], value: Sequence[int], *args, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


# FlopCounterMode counts the CUDA attention kernels but not the CPU one `scaled_dot_product_attention` runs
# here, which would hide the attention work pruned heads save.
_CUSTOM = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def count_flops(module: nn.Module, batch: Batch) -> int:
    """FLOPs of one call on `batch` (2 per multiply-add; matmuls, convolutions and attention, as torch's
    FlopCounterMode counts them, with the CPU attention kernel counted too)."""
    with flop_counter.FlopCounterMode(display=False, custom_mapping=_CUSTOM) as counter:
        module(*batch)
    return int(counter.get_total_flops())


def as_tuple(out: Tensor | tuple | list) -> tuple[Tensor, ...]:
    return (out,) if isinstance(out, Tensor) else tuple(out)


@torch.no_grad()
def outputs(module: nn.Module, batches: Sequence[Batch]) -> list[tuple[Tensor, ...]]:
    """The module's outputs (as tuples, detached) on every batch, in eval mode."""
    was_training = module.training
    module.eval()
    try:
        return [tuple(t.detach().clone() for t in as_tuple(module(*batch))) for batch in batches]
    finally:
        module.train(was_training)


def fidelity_db(reference: Sequence[tuple[Tensor, ...]], test: Sequence[tuple[Tensor, ...]]) -> float:
    """SQNR (dB) of `test` against `reference` over every output of every batch at once."""
    from quant.metrics import outputs_sqnr

    return outputs_sqnr([t for out in reference for t in out], [t for out in test for t in out])
