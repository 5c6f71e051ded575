"""RoPE attention of EfficientTAM's memory attention, and the additive bias that switches memory slots off.

Shared by the full memory cross-attention (`memory_attention.py`) and the pooled one of the efficient-memory
variants (`efficient_memory.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgevit.models.efficienttam.position import apply_rope
from quant.modules import MatMul

# Bias for invalid keys. Finite so that a row with no valid key gives no NaN; exp(-3e4) is exactly 0 in
# fp32, fp16 and bf16, and -3e4 still fits in fp16 (max 65504).
MASKED = -3.0e4


def slot_bias(valid: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """[B, S] 0/1 slot validities -> [B, S*T] additive bias (0 or MASKED) for the T tokens of each slot.

    `zeros` is a [1, 1, T] constant: a broadcast add spreads each slot's bias over its tokens, which every
    backend lowers as one elementwise op (repeat_interleave would become an expand copy)."""
    b, s = valid.shape
    return ((valid - 1.0) * -MASKED).reshape(b, s, 1).add(zeros).reshape(b, s * zeros.shape[-1])


class RoPEAttention(nn.Module):
    """Single-head attention with 2-D axial RoPE on queries and on the first `num_rope_frames` * h*w keys.

    The rotated keys are `num_rope_frames` consecutive h*w frames sharing one table (the reference's
    `rope_k_repeat`); keys after them (object pointers) are left unrotated (its `num_k_exclude_rope`).
    The official configs use one head, so RoPE runs on [B, N, C] tokens with no head axis (the pair view
    of the keys then stays within Core ML's rank limit of 5) and the head axis is added by reshapes only
    for SDPA, whose ONNX lowering takes 4-D tensors (reshapes, not unsqueeze/select, which XNNPACK leaves
    undelegated).

    `explicit_matmuls` (set on the quantization copy by `edgevit.pipeline.passes.quant_recipe.prepare`, as for
    the image encoder's attention) computes Q·Kᵀ and A·V with the `MatMul` modules `qk` and `av`, so a plan
    quantizes them by name and ONNX Runtime runs them int8: in ti_512_1's int8 memory attention the four layers'
    float attention matmuls were 43 % of the unit's kernel time (1024 queries × 1856 pooled keys × 256 channels
    in cross-attention, 1024 × 1024 × 256 in self-attention), each ~2× slower per FLOP than its int8 GEMMs.
    """

    explicit_matmuls = False

    def __init__(self, d_model: int, kv_in_dim: int, num_rope_frames: int) -> None:
        super().__init__()
        self.num_rope_frames = num_rope_frames
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(kv_in_dim, d_model)
        self.v_proj = nn.Linear(kv_in_dim, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.qk = MatMul()
        self.av = MatMul()

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
        return self.attend(q, k, self.v_proj(v), attn_bias)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_bias: torch.Tensor | None) -> torch.Tensor:
        """SDPA on projected, rotated [B, N, C] / [B, M, C] tokens with a [B, 1, 1, M] additive bias."""
        (b, n, c), m = q.shape, k.shape[1]
        q, k, v = q.reshape(b, 1, n, c), k.reshape(b, 1, m, c), v.reshape(b, 1, m, c)
        if self.explicit_matmuls:
            scores = self.qk(q * c**-0.5, k.transpose(-2, -1))  # Kᵀ of a 4-D view, as converters.sdpa writes it
            attn = (scores if attn_bias is None else scores + attn_bias).softmax(dim=-1)
            out = self.av(attn, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)
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
