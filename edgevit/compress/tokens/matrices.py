"""The token matrices of the three methods, in one form: Y = T·X compresses N tokens to M, and X' = R·Y brings a
dense output back to the N-token grid.

Every method builds an assignment W (B, M, N): column i says how source token i is shared among the M output
tokens. T is W weighted by each source's size (how many original patches it already stands for) and normalised
per output row, so an output token is a weighted average; the output sizes are W·size (what proportional
attention reads). Only matmuls, softmax, top-k, argmax and comparisons with constant ranges are used, and M is a
Python integer: the exported graph has static shapes.

- transform (Token Transforming, Zeng, Yu, Kong, Tang, arXiv 2506.05709; its precursor is M2M-TAG, NeurIPS 2024
  workshop): many-to-many. Only the paper's abstract and Figure 1 (pruning one-to-one, merging many-to-one,
  transforming "integrates original tokens into remaining ones", many-to-many) could be read here, and its code
  repository holds no code, so the matrix is a reconstruction: the N − M most redundant tokens (closest key to a
  token of the other half) are each spread over the kept tokens of the other half by a softmax of key
  similarity, so a kept token gathers from many sources and a source feeds many kept tokens; the inverse
  transform is Wᵀ (a token rebuilt from what it was spread over). Variants tried on DINOv2-S saliency at −40 %
  FLOPs (kept tokens chosen by attention: 5 dB worse; ToMe's uncentred keys for the choice, a spread limited to
  the best 2-3 partners, or a hard forward with a soft inverse: up to 0.9 dB better on held-out photos and video
  frames but worse on the four photos the temperature was chosen on) all stayed below ToMe on the held-out set;
  see benchmarks/results/shrink_tokens.md.
- topk (attention-based token pruning, EViT-style): keep the M most attended tokens (one-to-one); a dropped token
  is restored by copying the kept token whose key is most similar to its own.
- tome (ToMe, Bolya et al. 2023): bipartite soft matching between alternate tokens, the N − M most similar pairs
  merged (many-to-one); a token is restored by copying the token it was merged into.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

METHODS = ("transform", "topk", "tome")
DEFAULT_TAU = 0.05  # softmax temperature of the transform's cosine similarities (chosen on DINOv2-S saliency)


def _range(n: int, device: torch.device) -> Tensor:
    """0..n-1 as a constant tensor: `torch.arange` would export as an iota op that LiteRT's runtime lacks."""
    return torch.tensor(list(range(n)), dtype=torch.int64, device=device)


def one_hot(index: Tensor, n: int) -> Tensor:
    """(B, K) indices → (B, K, n) float one-hot rows, by comparison with a constant range (no scatter)."""
    return (index.unsqueeze(-1) == _range(n, index.device)).to(torch.float32)


def assignment(method: str, keys: Tensor, score: Tensor, m: int, tau: float = DEFAULT_TAU) -> tuple[Tensor, Tensor]:
    """(W (B, M, N), R (B, N, M)) for `method` from keys (B, N, C) and informativeness scores (B, N)."""
    if method == "transform":
        # Centred: a ViT's keys share a large common part that makes every cosine high and the softmax flat.
        return _bipartite(keys - keys.mean(dim=1, keepdim=True), m, tau)
    if method == "topk":
        return _topk(keys, score, m)
    if method == "tome":
        return _bipartite(keys, m, None)
    raise ValueError(f"unknown token method {method!r}; valid: {', '.join(METHODS)}")


def apply(w: Tensor, x: Tensor, size: Tensor) -> tuple[Tensor, Tensor]:
    """Y = T·X with T = W·diag(size) normalised per row; returns (Y, output sizes)."""
    mass = w * size.unsqueeze(1)
    new_size = mass.sum(-1)
    t = mass / new_size.clamp_min(1e-6).unsqueeze(-1)
    return t @ x, new_size


def _topk(keys: Tensor, score: Tensor, m: int) -> tuple[Tensor, Tensor]:
    unit = F.normalize(keys, dim=-1)
    select = one_hot(score.topk(m, dim=-1).indices, keys.shape[1])  # (B, M, N)
    sim = (select @ unit) @ unit.transpose(1, 2)  # kept tokens' cosine similarity to every token
    nearest = one_hot(sim.argmax(dim=1), m)  # (B, N, M): a kept token is its own nearest (cosine 1)
    return select, nearest


def _bipartite(keys: Tensor, m: int, tau: float | None) -> tuple[Tensor, Tensor]:
    """A = even tokens, B = odd; the r = N − M A-tokens with the most similar B-partner leave, each merged into
    its best partner (`tau` None: ToMe) or spread over B by softmax(similarity / tau); the rest of A and all of
    B stay. Outputs: [staying A..., B...]."""
    n = keys.shape[1]
    r = n - m
    unit = F.normalize(keys, dim=-1)
    a, b = unit[:, 0::2], unit[:, 1::2]
    na, nb = a.shape[1], b.shape[1]
    if not 0 <= r <= na:
        raise ValueError(f"bipartite matching merges at most {na} of {n} tokens per block, asked for {r}")
    sim = a @ b.transpose(1, 2)
    best, partner = sim.max(dim=-1)  # (B, Na)
    merged = one_hot(best.topk(r, dim=-1).indices, na).sum(1)  # (B, Na) 1 where merged
    kept_a = one_hot((-best).topk(na - r, dim=-1).indices, na)  # (B, Na-r, Na)
    spread = one_hot(partner, nb) if tau is None else torch.softmax(sim / tau, dim=-1)  # (B, Na, Nb)
    into_b = spread.transpose(1, 2) * merged.unsqueeze(1)  # (B, Nb, Na)
    w_a = torch.cat([kept_a, into_b], dim=1)  # (B, M, Na)
    rows = torch.tensor([-1] * (na - r) + list(range(nb)), device=keys.device)  # -1: a staying A row, all zero
    w_b = one_hot(rows.unsqueeze(0), nb).expand(keys.shape[0], m, nb)  # (B, M, Nb)
    w = _interleave(w_a, w_b, n)
    return w, w.transpose(1, 2)


def _interleave(even: Tensor, odd: Tensor, n: int) -> Tensor:
    """Columns back in token order: even[..., j] is token 2j, odd[..., j] token 2j+1 (a constant gather)."""
    order = [i // 2 if i % 2 == 0 else even.shape[-1] + i // 2 for i in range(n)]
    return torch.cat([even, odd], dim=-1)[..., order]
