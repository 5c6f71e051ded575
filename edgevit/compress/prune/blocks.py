"""What pruning needs from a transformer block, and the adapters that find it in each model family.

A prunable block is multi-head attention with a fused `qkv` linear, an output `proj` and a `num_heads` count,
plus a two-linear MLP. Heads are removed by dropping their rows of `qkv` (q, k and v alike) and their columns
of `proj`; MLP channels by dropping rows of the first linear and columns of the second. The attention modules
read the head count from `num_heads` and the head width from the weights, so nothing else has to change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn


class PrunableBlock(Protocol):
    """A transformer block as pruning sees it: its four linears, its head count, and the per-channel scales
    (LayerScale's gamma, or None) applied to what attention and MLP write into the residual stream."""

    name: str
    attn: nn.Module
    qkv: nn.Linear
    proj: nn.Linear
    fc1: nn.Linear
    fc2: nn.Linear
    attn_scale: torch.Tensor | None
    mlp_scale: torch.Tensor | None

    @property
    def num_heads(self) -> int: ...

    @property
    def head_dim(self) -> int: ...

    @property
    def hidden(self) -> int: ...

    def keep_heads(self, keep: Sequence[int]) -> None: ...

    def keep_channels(self, keep: Sequence[int]) -> None: ...


@dataclass
class BlockAdapter:
    """The one `PrunableBlock` implementation: both families have the same shape under different names."""

    name: str
    attn: nn.Module
    fc1: nn.Linear
    fc2: nn.Linear
    attn_scale: torch.Tensor | None = None
    mlp_scale: torch.Tensor | None = None

    @property
    def qkv(self) -> nn.Linear:
        return self.attn.qkv

    @property
    def proj(self) -> nn.Linear:
        return self.attn.proj

    @property
    def num_heads(self) -> int:
        return int(self.attn.num_heads)

    @property
    def head_dim(self) -> int:
        return self.qkv.out_features // 3 // self.num_heads

    @property
    def hidden(self) -> int:
        return self.fc1.out_features

    def keep_heads(self, keep: Sequence[int]) -> None:
        """Keep only the heads `keep` (sorted): fewer qkv rows, fewer proj columns, a smaller `num_heads`."""
        heads, hd = self.num_heads, self.head_dim
        if list(keep) == list(range(heads)):
            return
        rows = torch.tensor([p * heads * hd + h * hd + j for p in range(3) for h in keep for j in range(hd)])
        cols = torch.tensor([h * hd + j for h in keep for j in range(hd)])
        _keep_outputs(self.qkv, rows)
        _keep_inputs(self.proj, cols)
        self.attn.num_heads = len(keep)

    def keep_channels(self, keep: Sequence[int]) -> None:
        """Keep only the MLP hidden channels `keep` (sorted)."""
        if list(keep) == list(range(self.hidden)):
            return
        index = torch.tensor(list(keep))
        _keep_outputs(self.fc1, index)
        _keep_inputs(self.fc2, index)


def _keep_outputs(linear: nn.Linear, rows: torch.Tensor) -> None:
    """Shrink a linear to the output features `rows`, in place (the module object stays the same)."""
    linear.weight = nn.Parameter(linear.weight.detach()[rows].clone(), requires_grad=linear.weight.requires_grad)
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.detach()[rows].clone(), requires_grad=linear.bias.requires_grad)
    linear.out_features = len(rows)


def _keep_inputs(linear: nn.Linear, cols: torch.Tensor) -> None:
    weight = linear.weight
    linear.weight = nn.Parameter(weight.detach()[:, cols].clone(), requires_grad=weight.requires_grad)
    linear.in_features = len(cols)


def _gamma(module: nn.Module) -> torch.Tensor | None:
    gamma = getattr(module, "gamma", None)
    return gamma.detach() if isinstance(gamma, torch.Tensor) else None


def _vit_block(name: str, block: nn.Module) -> BlockAdapter:
    return BlockAdapter(name, block.attn, block.mlp.fc1, block.mlp.fc2, _gamma(block.ls1), _gamma(block.ls2))


def _efficienttam_block(name: str, block: nn.Module) -> BlockAdapter:
    return BlockAdapter(name, block.attn, block.mlp.layers[0], block.mlp.layers[1])


def _adapters() -> dict[type, Callable[[str, nn.Module], BlockAdapter]]:
    from edgevit.models import vit
    from edgevit.models.efficienttam import image_encoder

    return {vit.Block: _vit_block, image_encoder.Block: _efficienttam_block}


def prunable_blocks(module: nn.Module) -> list[BlockAdapter]:
    """Every transformer block of `module` that pruning knows (the ViT family's `vit.Block`, EfficientTAM's
    image-encoder `Block`), in module order, named by its path in `module`."""
    adapters = _adapters()
    return [adapters[type(m)](name, m) for name, m in module.named_modules() if type(m) in adapters]
