"""EfficientTAM memory attention: the current frame's tokens attend to themselves, then to a memory bank.

Weight-compatible with the reference `memory_attention`, rewritten for a memory bank of fixed capacity so
the deploy unit has static shapes: `num_maskmem` frames of h*w spatial memories followed by
`max_obj_ptrs` object pointers of `d_model / mem_dim` tokens each. Slots that hold nothing yet (the first
frames of a video, absent pointers) are switched off by `memory_valid`, which becomes an additive attention
bias; the result equals the reference run on the valid entries alone. RoPE uses real cos/sin tables built
once for `cfg.feat_size` (the reference rotates with complex tensors, which ONNX and Core ML lack).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgevit.models.efficienttam.config import EfficientTAMConfig
from edgevit.models.efficienttam.position import apply_rope, axial_rope_tables

# Official configs: no downsampling inside attention, a 2048-wide ReLU MLP.
FFN_DIM = 2048
# Bias for invalid keys. Finite so that a row with no valid key gives no NaN; exp(-3e4) is exactly 0 in
# fp32, fp16 and bf16, and -3e4 still fits in fp16 (max 65504).
MASKED = -3.0e4


class RoPEAttention(nn.Module):
    """Single-head attention with 2-D axial RoPE on queries and on the first `num_rope_frames` * h*w keys.

    The rotated keys are `num_rope_frames` consecutive h*w frames sharing one table (the reference's
    `rope_k_repeat`); keys after them (object pointers) are left unrotated (its `num_k_exclude_rope`).
    The official configs use one head, so RoPE runs on [B, N, C] tokens with no head axis (the pair view
    of the keys then stays within Core ML's rank limit of 5) and the head axis is added by reshapes only
    for SDPA, whose ONNX lowering takes 4-D tensors (reshapes, not unsqueeze/select, which XNNPACK leaves
    undelegated).
    """

    def __init__(self, d_model: int, kv_in_dim: int, num_rope_frames: int) -> None:
        super().__init__()
        self.num_rope_frames = num_rope_frames
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(kv_in_dim, d_model)
        self.v_proj = nn.Linear(kv_in_dim, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attn_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q = apply_rope(self.q_proj(q), cos, sin)
        k = self._rope_keys(self.k_proj(k), cos, sin)
        v = self.v_proj(v)
        (b, n, c), m = q.shape, k.shape[1]
        out = F.scaled_dot_product_attention(
            q.reshape(b, 1, n, c), k.reshape(b, 1, m, c), v.reshape(b, 1, m, c), attn_mask=attn_bias
        )
        return self.out_proj(out.reshape(b, n, c))

    def _rope_keys(self, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, m, c = k.shape
        hw = cos.shape[0]
        n_rope = self.num_rope_frames * hw
        # No slice when all keys rotate: a full-extent slice exports as `aten.alias`, which Core ML rejects.
        frames = k if n_rope == m else k[:, :n_rope]
        rotated = apply_rope(frames.reshape(b, self.num_rope_frames, hw, c), cos, sin).reshape(b, n_rope, c)
        if n_rope == m:
            return rotated
        return torch.cat((rotated, k[:, n_rope:]), dim=1)


class MemoryAttentionLayer(nn.Module):
    """Pre-norm self-attention (RoPE, no additive position), cross-attention to the memory (keys carry
    the memory position encoding), ReLU MLP — the reference layer with its eval-mode dropouts removed."""

    def __init__(self, d_model: int, mem_dim: int, num_maskmem: int) -> None:
        super().__init__()
        self.self_attn = RoPEAttention(d_model, d_model, num_rope_frames=1)
        self.cross_attn_image = RoPEAttention(d_model, mem_dim, num_rope_frames=num_maskmem)
        self.linear1 = nn.Linear(d_model, FFN_DIM)
        self.linear2 = nn.Linear(FFN_DIM, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_with_pos: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attn_bias: torch.Tensor,
    ) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.self_attn(y, y, y, cos, sin)
        x = x + self.cross_attn_image(self.norm2(x), memory_with_pos, memory, cos, sin, attn_bias)
        return x + self.linear2(F.relu(self.linear1(self.norm3(x))))


class MemoryAttention(nn.Module):
    """Condition the current frame's features on a fixed-capacity memory bank.

    Memory layout (M = num_maskmem*h*w + max_obj_ptrs*d_model/mem_dim tokens): the spatial memories of
    `num_maskmem` frames, each h*w tokens in row-major order, then the object-pointer tokens. The RoPE
    tables for h = w = `cfg.feat_size` are the non-persistent buffers `rope_cos` / `rope_sin` [h*w, d/2].
    """

    def __init__(self, cfg: EfficientTAMConfig) -> None:
        super().__init__()
        hw = cfg.feat_size * cfg.feat_size
        self.num_tokens = hw
        self.num_mem_tokens = cfg.num_maskmem * hw
        self.num_obj_ptr_tokens = cfg.max_obj_ptrs * (cfg.d_model // cfg.mem_dim)
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(cfg.d_model, cfg.mem_dim, cfg.num_maskmem) for _ in range(cfg.memory_attention_layers)
        )
        self.norm = nn.LayerNorm(cfg.d_model)
        cos, sin = axial_rope_tables(cfg.d_model, cfg.feat_size, cfg.feat_size, theta=cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    @property
    def memory_size(self) -> int:
        """M, the number of memory tokens the forward expects."""
        return self.num_mem_tokens + self.num_obj_ptr_tokens

    def forward(
        self,
        curr: torch.Tensor,
        curr_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        memory_valid: torch.Tensor,
    ) -> torch.Tensor:
        """curr, curr_pos [B, h*w, d_model]; memory, memory_pos [B, M, mem_dim]; memory_valid [B, M] (bool
        or 0/1 float) -> [B, h*w, d_model].

        Invalid memory tokens get zero attention weight; fill them with finite values (zeros), since a NaN
        would still propagate through the zero-weighted sum.
        """
        if curr.shape[1] != self.num_tokens or memory.shape[1] != self.memory_size:
            raise ValueError(
                f"expected {self.num_tokens} current and {self.memory_size} memory tokens, "
                f"got {curr.shape[1]} and {memory.shape[1]}"
            )
        b, m = memory_valid.shape
        attn_bias = ((1.0 - memory_valid.to(curr.dtype)) * MASKED).reshape(b, 1, 1, m)
        memory_with_pos = memory + memory_pos
        x = curr + 0.1 * curr_pos
        for layer in self.layers:
            x = layer(x, memory, memory_with_pos, self.rope_cos, self.rope_sin, attn_bias)
        return self.norm(x)
