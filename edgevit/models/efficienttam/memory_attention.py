"""EfficientTAM memory attention: the current frame's tokens attend to themselves, then to a memory bank.

Weight-compatible with the reference `memory_attention`, rewritten for a memory bank of fixed capacity so
the deploy unit has static shapes: `num_maskmem` frames of h*w spatial memories followed by
`max_obj_ptrs` object pointers of `d_model / mem_dim` tokens each. Slots that hold nothing yet (the first
frames of a video, absent pointers) are switched off by 0/1 float validities that become an additive
attention bias by arithmetic alone (no boolean op, no repeat or expand copy: lowered graphs stay whole);
the result equals the reference run on the valid entries alone. RoPE uses real cos/sin tables built once
for `cfg.feat_size` (the reference rotates with complex tensors, which ONNX and Core ML lack).

`cfg.efficient_memory` 1 or 2 selects the official `EfficientRoPEAttention1/2` cross-attention (the
`efficienttam_*_1/_2` configs): spatial memory keys and values 2x2 average-pooled per frame (4x fewer), see
`efficient_memory.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgevit.models.efficienttam.config import EfficientTAMConfig
from edgevit.models.efficienttam.efficient_memory import PooledBank, PooledMemory, PooledRoPEAttention
from edgevit.models.efficienttam.position import axial_rope_tables
from edgevit.models.efficienttam.rope_attention import RoPEAttention, slot_bias

# Official configs: no downsampling inside attention, a 2048-wide ReLU MLP.
FFN_DIM = 2048


class MemoryAttentionLayer(nn.Module):
    """Pre-norm self-attention (RoPE, no additive position), cross-attention to the memory (keys carry
    the memory position encoding), ReLU MLP — the reference layer with its eval-mode dropouts removed."""

    def __init__(self, cfg: EfficientTAMConfig) -> None:
        super().__init__()
        d_model, mem_dim = cfg.d_model, cfg.mem_dim
        self.self_attn = RoPEAttention(d_model, d_model, num_rope_frames=1)
        if cfg.efficient_memory:
            self.cross_attn_image = PooledRoPEAttention(d_model, mem_dim, cfg.efficient_memory)
        else:
            self.cross_attn_image = RoPEAttention(d_model, mem_dim, num_rope_frames=cfg.num_maskmem)
        self.linear1 = nn.Linear(d_model, FFN_DIM)
        self.linear2 = nn.Linear(FFN_DIM, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self, x: torch.Tensor, bank: tuple[torch.Tensor, ...] | PooledBank, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.self_attn(y, y, y, cos, sin)
        if isinstance(bank, PooledBank):
            x = x + self.cross_attn_image(self.norm2(x), bank, cos, sin)
        else:
            memory, memory_with_pos, attn_bias = bank
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
        self.cfg = cfg
        self.num_tokens = hw
        self.num_mem_tokens = cfg.num_maskmem * hw
        self.ptr_split = cfg.d_model // cfg.mem_dim
        self.num_obj_ptr_tokens = cfg.max_obj_ptrs * self.ptr_split
        self.layers = nn.ModuleList(MemoryAttentionLayer(cfg) for _ in range(cfg.memory_attention_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        cos, sin = axial_rope_tables(cfg.d_model, cfg.feat_size, cfg.feat_size, theta=cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("frame_zeros", torch.zeros(1, 1, hw), persistent=False)
        self.register_buffer("ptr_zeros", torch.zeros(1, 1, self.ptr_split), persistent=False)
        # no parameters: the state dict stays the official one
        self.pooled_memory = PooledMemory(cfg) if cfg.efficient_memory else None

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
        frame_valid: torch.Tensor,
        ptr_valid: torch.Tensor,
    ) -> torch.Tensor:
        """curr, curr_pos [B, h*w, d_model]; memory, memory_pos [B, M, mem_dim]; frame_valid [B, num_maskmem]
        and ptr_valid [B, max_obj_ptrs] as 0/1 floats -> [B, h*w, d_model].

        Invalid memory tokens get zero attention weight; fill them with finite values (zeros), since a NaN
        would still propagate through the zero-weighted sum.
        """
        if curr.shape[1] != self.num_tokens or memory.shape[1] != self.memory_size:
            raise ValueError(
                f"expected {self.num_tokens} current and {self.memory_size} memory tokens, "
                f"got {curr.shape[1]} and {memory.shape[1]}"
            )
        memory_with_pos = memory + memory_pos
        ptr_bias = slot_bias(ptr_valid, self.ptr_zeros)
        if self.pooled_memory is not None:
            bank = self.pooled_memory(memory, memory_with_pos, frame_valid, ptr_bias)
        else:
            b = memory.shape[0]
            attn_bias = torch.cat((slot_bias(frame_valid, self.frame_zeros), ptr_bias), dim=1)
            bank = (memory, memory_with_pos, attn_bias.reshape(b, 1, 1, self.memory_size))
        x = curr + 0.1 * curr_pos
        for layer in self.layers:
            x = layer(x, bank, self.rope_cos, self.rope_sin)
        return self.norm(x)
