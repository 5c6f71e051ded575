"""Tiny modules shaped like the real units: a ViT (patch-embed conv, SDPA attention, LayerNorm, GELU) and a
two-input/two-output cross-attention whose names sort opposite to their order, so a backend that orders
tensors alphabetically (LiteRT's signature does) is caught."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from converters import DeployUnit


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TinyViT(nn.Module):
    def __init__(self, dim: int = 32, patch: int = 8, image: int = 32, depth: int = 2) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.pos = nn.Parameter(torch.randn(1, (image // patch) ** 2, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, 2) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(image).flatten(2).transpose(1, 2) + self.pos
        return self.norm(self.blocks(x))


class CrossAttend(nn.Module):
    """(query, memory) -> (scores, attended): names sort as memory<query and attended<scores.

    `heads=0` calls SDPA on 3-D tensors, which torch.onnx's exporter cannot lower (it takes 4-D only): the
    tests use that as a real "op the backend can't lower" case.
    """

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2) if self.heads else x

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(memory).chunk(2, dim=-1)
        attended = F.scaled_dot_product_attention(self._split(self.q(query)), self._split(k), self._split(v))
        if self.heads:
            attended = attended.transpose(1, 2).flatten(2)
        return attended.sum(-1), attended + query


@pytest.fixture(scope="session")
def vit_unit() -> DeployUnit:
    torch.manual_seed(0)
    return DeployUnit(
        name="tiny_vit",
        module=TinyViT().eval(),
        example_inputs=(torch.randn(1, 3, 32, 32),),
        input_names=("image",),
        output_names=("tokens",),
    )


@pytest.fixture(scope="session")
def cross_unit() -> DeployUnit:
    torch.manual_seed(1)
    return DeployUnit(
        name="cross",
        module=CrossAttend().eval(),
        example_inputs=(torch.randn(1, 6, 16), torch.randn(1, 10, 16) * 3.0),
        input_names=("query", "memory"),
        output_names=("scores", "attended"),
    )


@pytest.fixture(scope="session")
def fresh_inputs(vit_unit: DeployUnit, cross_unit: DeployUnit) -> dict[str, tuple[torch.Tensor, ...]]:
    """Inputs other than the example ones, so parity proves the artifact is not specialised to them."""
    g = torch.Generator().manual_seed(42)
    return {
        u.name: tuple(torch.randn(x.shape, generator=g) * 2.0 for x in u.example_inputs) for u in (vit_unit, cross_unit)
    }
