"""A tiny ViT with the activation outliers real ViTs have, for quantization tests.

Block 0 computes attention with explicit `MatMul` modules (so Q·Kᵀ and attn·V get quantized), block 1
with `F.scaled_dot_product_attention` (fused, stays float). Outliers are injected the way they appear in
trained ViTs: one residual-stream channel ~25× the RMS of the others (a large, nearly constant value per
token, so LayerNorm outputs become asymmetric there), and a few LayerNorm gains ~20× with offset biases,
so the Linears after LayerNorm see channels far larger and far from centred.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quant.modules import MatMul

DIM, HEADS, MLP, PATCH, IMAGE, CLASSES = 64, 4, 128, 4, 32, 10


class Attention(nn.Module):
    def __init__(self, explicit: bool) -> None:
        super().__init__()
        self.explicit = explicit
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.proj = nn.Linear(DIM, DIM)
        if explicit:
            self.qk = MatMul()
            self.av = MatMul()

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, HEADS, c // HEADS).permute(2, 0, 3, 1, 4).unbind(0)
        if self.explicit:
            attn = self.qk(q * (c // HEADS) ** -0.5, k.transpose(-2, -1)).softmax(dim=-1)
            out = self.av(attn, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(DIM, MLP)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(MLP, DIM)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, explicit: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(DIM)
        self.attn = Attention(explicit)
        self.norm2 = nn.LayerNorm(DIM)
        self.mlp = Mlp()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, DIM, PATCH, PATCH)
        self.pos_embed = nn.Parameter(torch.randn(1, (IMAGE // PATCH) ** 2, DIM) * 0.02)
        self.blocks = nn.Sequential(Block(explicit=True), Block(explicit=False))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x.mean(dim=1))


@torch.no_grad()
def make_tiny_vit(seed: int = 0, outliers: bool = True) -> TinyViT:
    torch.manual_seed(seed)
    model = TinyViT().eval()
    if outliers:
        rms = model.patch_embed(torch.randn(8, 3, IMAGE, IMAGE)).pow(2).mean().sqrt()
        model.patch_embed.bias[7] += 25 * rms
        for norm in (
            model.blocks[0].norm1,
            model.blocks[0].norm2,
            model.blocks[1].norm1,
            model.blocks[1].norm2,
        ):
            norm.weight[[3, 21, 40]] *= 20.0
            norm.bias[[3, 21, 40, 55]] += torch.tensor([6.0, -4.0, 8.0, 3.0])
    return model


def image_batches(count: int, batch: int = 8, seed: int = 1) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, IMAGE, IMAGE, generator=generator) for _ in range(count)]
