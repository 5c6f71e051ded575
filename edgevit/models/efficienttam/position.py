"""Position encodings of EfficientTAM, as constant tables for a fixed feature-map size.

The reference builds its sine encoding from a tensor's shape on every call and rotates with complex numbers
(`torch.view_as_complex`); neither survives ONNX or Core ML. For a fixed input size both are constants, so
they are computed here once (callers keep them as non-persistent buffers) and RoPE is written as real
cos/sin arithmetic that every backend lowers to elementwise ops.
"""

from __future__ import annotations

import math

import torch


def sine_position_encoding(num_pos_feats: int, height: int, width: int, temperature: float = 10000.0) -> torch.Tensor:
    """DETR-style normalised sine encoding of a `height` x `width` grid, shaped [1, num_pos_feats, H, W].

    Matches the reference `PositionEmbeddingSine(normalize=True, scale=2*pi)`: coordinates start at 1 and
    are divided by (last coordinate + 1e-6), and channels are the y half then the x half, each interleaving
    sin (even frequency slots) and cos (odd slots).
    """
    if num_pos_feats % 4 != 0:
        raise ValueError(f"num_pos_feats must be a multiple of 4, got {num_pos_feats}")
    half = num_pos_feats // 2
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, height + 1, dtype=torch.float32)
    x = torch.arange(1, width + 1, dtype=torch.float32)
    y = y / (y[-1:] + eps) * scale
    x = x / (x[-1:] + eps) * scale
    dim_t = temperature ** (2 * (torch.arange(half, dtype=torch.float32) // 2) / half)

    def encode(coord: torch.Tensor) -> torch.Tensor:
        angles = coord[:, None] / dim_t  # [n, half]
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(y)[:, None, :].expand(height, width, half)
    pos_x = encode(x)[None, :, :].expand(height, width, half)
    return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1).unsqueeze(0).contiguous()


def axial_rope_tables(dim: int, end_x: int, end_y: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """2-D axial RoPE for an `end_y` x `end_x` row-major grid as two [H*W, dim] tables for `apply_rope`.

    Angles as in the reference `compute_axial_cis`: the first dim/4 channel pairs rotate by the x
    coordinate, the last dim/4 by the y coordinate, with the same frequencies on both axes. Each pair's
    cos is written to both of its channels; its sin is written negated to the first channel and as is to
    the second, so the rotation is `x * cos + swap_pairs(x) * sin` — full-width elementwise ops with no
    broadcasting trick or size-1 axis left for the exporter to squeeze.
    """
    if dim % 4 != 0:
        raise ValueError(f"RoPE dim must be a multiple of 4, got {dim}")
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    t_x = t % end_x
    t_y = torch.div(t, end_x, rounding_mode="floor")
    angles = torch.cat((torch.outer(t_x, freqs), torch.outer(t_y, freqs)), dim=-1)  # [N, dim/2]
    cos = angles.cos().repeat_interleave(2, dim=-1)
    sin = torch.stack((-angles.sin(), angles.sin()), dim=-1).flatten(-2)
    return cos, sin


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (x[2i], x[2i+1]) of `x` [..., N, dim] by the tables of `axial_rope_tables`.

    Equal to the reference `apply_rotary_enc` (pairs viewed as complex numbers times exp(i*angle)) with the
    same products summed in the same order. The pair swap uses slices and a concat, which XNNPACK delegates,
    rather than `unbind` (its squeezes are left to the portable kernels).
    """
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    swapped = torch.cat((pairs[..., 1:], pairs[..., :1]), dim=-1).reshape(x.shape)
    return x * cos + swapped * sin
