"""Self-attention computed from a block's own `qkv`/`proj` linears, with what token compression reads from it.

The models' attention is one fused `scaled_dot_product_attention`, which hides the keys and the attention map.
A compressing block needs both (keys for similarity, the map for informativeness) and, once tokens stand for
several patches, ToMe's proportional attention (log size added to the logits), so it runs this instead: the
same weights, the same maths, explicit matmuls and a softmax that every exporter lowers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class Attended:
    """The attention's output (B, N, C), the keys (B, N, C, heads concatenated) and the informativeness of every
    token (B, N): the class token's attention to it when there is one, else the mean attention it receives."""

    out: Tensor
    keys: Tensor
    score: Tensor


def attend(attn: nn.Module, x: Tensor, size: Tensor | None, prefix: int) -> Attended:
    """`attn`'s forward on (B, N, C) tokens; `size` (B, N) adds log(size) to the logits (None: all ones)."""
    b, n, c = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x)
    width = qkv.shape[-1] // 3
    q, k, v = (qkv[..., i * width : (i + 1) * width].reshape(b, n, heads, -1).transpose(1, 2) for i in range(3))
    logits = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    if size is not None:
        logits = logits + torch.log(size).reshape(b, 1, 1, n)
    probs = torch.softmax(logits, dim=-1)
    out = attn.proj((probs @ v).transpose(1, 2).reshape(b, n, width))
    mean = probs.mean(dim=1)  # (B, N, N) over heads
    score = mean[:, 0] if prefix > 0 else mean.mean(dim=1)
    return Attended(out, k.transpose(1, 2).reshape(b, n, width), score)
