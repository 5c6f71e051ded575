"""EfficientTAM's efficient memory cross-attention (the official `EfficientRoPEAttention1/2`, `_1`/`_2` configs).

The official module rotates the memory keys (RoPE), then 2x2 average-pools each memory frame's keys and
values, so the current frame attends to h*w/4 tokens per memory frame (plus the object pointers, unpooled).
Pooled keys stand for four keys each, which the two versions account for differently:
- `1` adds log(4) to the attention logits of pooled keys;
- `2` adds log(4) to the pooled key *vectors* (every channel) before a plain SDPA.
With a single memory frame (the first frame after the prompt) the official code does not pool at all.

Here the bank has a fixed capacity (memory_attention.py), so which case applies is data, not control flow:
`a` = 1 when two or more frames are valid, else 0, blends the pooled keys/values with the single frame's
full keys/values in one buffer of max(num_maskmem*h*w/4, h*w) tokens (the single frame is picked by a
one-hot product; a blend with a = 0 or 1 is exact), and the additive bias switches off whatever the blend
leaves unused. Attention cost is that of the pooled bank alone. Values are pooled before `v_proj` (the
projection is affine, so pooling commutes with it: the same result, 4x fewer tokens projected, once per call
rather than per layer); keys cannot be, since RoPE rotates each position differently before pooling.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from edgevit.models.efficienttam.config import EfficientTAMConfig
from edgevit.models.efficienttam.position import apply_rope
from edgevit.models.efficienttam.rope_attention import MASKED, RoPEAttention, slot_bias

POOLED_LOGIT_OFFSET = 2 * math.log(2)  # the official `2 * math.log(s_kernel_size)` with a 2x2 kernel


def pool2x2(tokens: torch.Tensor, side: int) -> torch.Tensor:
    """Average-pool [B, F*side*side, C] row-major frames 2x2 -> [B, F*side*side/4, C] (official avg_pool2d).

    Written as reshapes, slices and adds over the token layout, so no NCHW transposes are needed and the
    ranks stay within Core ML's limit of 5."""
    b, n, c = tokens.shape
    rows = tokens.reshape(b * n // (2 * side), 2, side // 2, 2 * c)  # [B*F*side/2, dy, x/2, (dx, C)]
    pairs = rows[:, 0:1] + rows[:, 1:2]
    return ((pairs[..., :c] + pairs[..., c:]) * 0.25).reshape(b, n // 4, c)


def _blend(pooled: torch.Tensor, single: torch.Tensor, a: torch.Tensor, length: int) -> torch.Tensor:
    """a * pooled + (1 - a) * single, each zero-padded to `length` tokens; a is [B, 1, 1] of 0 or 1."""
    if pooled.shape[1] < length:
        pooled = F.pad(pooled, (0, 0, 0, length - pooled.shape[1]))
    if single.shape[1] < length:
        single = F.pad(single, (0, 0, 0, length - single.shape[1]))
    return pooled * a + single * (1.0 - a)


class PooledBank(NamedTuple):
    """What every layer's pooled cross-attention reads, prepared once per call."""

    spatial_with_pos: torch.Tensor  # [B, F*h*w, mem_dim] key source, pooled after RoPE in each layer
    pooled_memory: torch.Tensor  # [B, F*h*w/4, mem_dim] value source
    single_with_pos: torch.Tensor  # [B, h*w, mem_dim] the one valid frame (a = 0)
    single_memory: torch.Tensor  # [B, h*w, mem_dim]
    ptr_with_pos: torch.Tensor  # [B, P*split, mem_dim]
    ptr_memory: torch.Tensor  # [B, P*split, mem_dim]
    pooled: torch.Tensor  # [B, 1, 1]: a, 1 with two or more valid frames
    bias: torch.Tensor  # [B, 1, 1, length + P*split]


class PooledMemory(nn.Module):
    """Builds the `PooledBank` from the fixed-capacity memory; holds the constants it needs as buffers."""

    def __init__(self, cfg: EfficientTAMConfig) -> None:
        super().__init__()
        if cfg.feat_size % 2:
            raise ValueError(f"pooled memory needs an even feature map, got {cfg.feat_size}")
        self.version = cfg.efficient_memory
        self.frames, self.side = cfg.num_maskmem, cfg.feat_size
        hw = cfg.feat_size**2
        self.num_pooled = cfg.num_maskmem * hw // 4
        self.length = max(self.num_pooled, hw)
        single_bias = torch.zeros(1, self.length)
        single_bias[:, hw:] = MASKED
        self.register_buffer("single_bias", single_bias, persistent=False)
        self.register_buffer("frame_ones", torch.ones(cfg.num_maskmem, 1), persistent=False)
        self.register_buffer("pooled_zeros", torch.zeros(1, 1, hw // 4), persistent=False)

    def forward(
        self, memory: torch.Tensor, memory_with_pos: torch.Tensor, frame_valid: torch.Tensor, ptr_bias: torch.Tensor
    ) -> PooledBank:
        b, _, c = memory.shape
        n = self.frames * self.side**2
        spatial, spatial_with_pos = memory[:, :n], memory_with_pos[:, :n]
        # a: clamp(#valid frames - 1, 0, 1), the count as a product so no reduction op is needed
        a = torch.clamp(frame_valid @ self.frame_ones - 1.0, 0.0, 1.0)  # [B, 1]
        onehot = frame_valid.reshape(b, 1, self.frames)

        def pick(x: torch.Tensor) -> torch.Tensor:
            # bmm, not `@`: a batched matmul exports as expand_copy + bmm, and XNNPACK leaves expand_copy out
            return torch.bmm(onehot, x.reshape(b, self.frames, -1)).reshape(b, -1, c)

        pooled_bias = slot_bias(frame_valid, self.pooled_zeros)
        if self.version == 1:
            pooled_bias = pooled_bias + POOLED_LOGIT_OFFSET
        if self.num_pooled < self.length:
            pooled_bias = F.pad(pooled_bias, (0, self.length - self.num_pooled), value=MASKED)
        bias = pooled_bias * a + self.single_bias * (1.0 - a)
        return PooledBank(
            spatial_with_pos=spatial_with_pos,
            pooled_memory=pool2x2(spatial, self.side),
            single_with_pos=pick(spatial_with_pos),
            single_memory=pick(spatial),
            ptr_with_pos=memory_with_pos[:, n:],
            ptr_memory=memory[:, n:],
            pooled=a.reshape(b, 1, 1),
            bias=torch.cat((bias, ptr_bias), dim=1).reshape(b, 1, 1, -1),
        )


class PooledRoPEAttention(RoPEAttention):
    """The official `EfficientRoPEAttention{version}` as cross-attention to a `PooledBank` (same parameters)."""

    def __init__(self, d_model: int, kv_in_dim: int, version: int) -> None:
        super().__init__(d_model, kv_in_dim, num_rope_frames=1)
        self.version = version

    def forward(  # type: ignore[override]  # cross-attention to a prepared bank, not (q, k, v)
        self, q: torch.Tensor, bank: PooledBank, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        q = apply_rope(self.q_proj(q), cos, sin)
        b, (hw, c) = q.shape[0], cos.shape
        keys = self.k_proj(bank.spatial_with_pos)
        frames = keys.shape[1] // hw
        rotated = apply_rope(keys.reshape(b, frames, hw, c), cos, sin).reshape(b, frames * hw, c)
        pooled_k = pool2x2(rotated, math.isqrt(hw))
        if self.version == 2:
            pooled_k = pooled_k + POOLED_LOGIT_OFFSET
        single_k = apply_rope(self.k_proj(bank.single_with_pos), cos, sin)
        length = bank.bias.shape[-1] - bank.ptr_memory.shape[1]
        k = _blend(pooled_k, single_k, bank.pooled, length)
        v = _blend(self.v_proj(bank.pooled_memory), self.v_proj(bank.single_memory), bank.pooled, length)
        k = torch.cat((k, self.k_proj(bank.ptr_with_pos)), dim=1)
        v = torch.cat((v, self.v_proj(bank.ptr_memory)), dim=1)
        return self.attend(q, k, v, bank.bias)
