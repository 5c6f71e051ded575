"""EfficientTAM's SAM prompt encoder with a fixed number of prompt slots.

Weight-compatible with the reference `sam_prompt_encoder` (same state-dict keys and shapes, including the
persistent buffer `pe_layer.positional_encoding_gaussian_matrix`). Differences that make it exportable:
- The reference takes a variable number of points and appends a padding point itself; here every call has
  `cfg.max_points` slots, the caller places SAM's padding point (label -1) in a slot of its own, and empty
  slots carry label `UNUSED_LABEL` so the mask decoder can mask them out of attention.
- Per-label embeddings are added through a one-hot matmul instead of boolean-index assignment (which exports
  as data-dependent scatter ops), and "mask or no mask" is a per-sample weight instead of a Python branch.
- The dense position encoding of the fixed feature grid (`get_dense_pe()` in the reference, recomputed on
  every call) is the non-persistent buffer `dense_pe`, refreshed whenever a state dict is loaded.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from edgevit.models.efficienttam.config import EfficientTAMConfig
from edgevit.models.layers import LayerNorm2d

PAD_LABEL = -1
"""SAM's padding point ("not a point"): embedded as `not_a_point_embed`, attended to like in the reference."""
UNUSED_LABEL = -2
"""An empty slot: its embedding is zero and the mask decoder masks it out as an attention key."""
MASK_IN_CHANS = 16  # fixed by the reference's `_build_sam_heads`


class RandomFourierPositionEncoding(nn.Module):
    """SAM's position encoding of (x, y) in [0, 1]^2 by random Fourier features (sin half, then cos half)."""

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        # Persistent: the official checkpoints carry it, and the dense encoding is derived from it.
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """[..., 2] normalised (x, y) -> [..., 2 * num_pos_feats]."""
        proj = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        proj = 2 * math.pi * proj
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def grid(self, height: int, width: int) -> torch.Tensor:
        """Encoding of the pixel centres of a `height` x `width` grid, shaped [1, C, H, W]."""
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height
        xs = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width
        x_grid, y_grid = torch.meshgrid(xs, ys, indexing="xy")
        pe = self(torch.stack([x_grid, y_grid], dim=-1).to(self.positional_encoding_gaussian_matrix.dtype))
        # Contiguous (NCHW) storage: a permuted view would be saved channels-last, which ExecuTorch's
        # kernels mix up with NCHW operands (wrong results, or a dim-order error).
        return pe.permute(2, 0, 1).unsqueeze(0).contiguous()


def _refresh_after_load(module: nn.Module, incompatible_keys: Any) -> None:
    module.refresh_dense_pe()


class PromptEncoder(nn.Module):
    """Point/box-corner slots and an optional mask prompt -> sparse and dense prompt embeddings.

    Slot labels: 1 positive click, 0 negative click, 2/3 top-left/bottom-right box corner, `PAD_LABEL` (-1)
    SAM's padding point, `UNUSED_LABEL` (-2) an empty slot. To reproduce the reference for a prompt of n
    points, fill n slots with them, one with the padding point (coords (0, 0), label -1) — the reference
    always appends it when no separate box is given, which is how the video predictor calls it — and the
    rest with `UNUSED_LABEL`. With no prompt at all (tracking frames), the reference uses one -1 point plus
    its pad, so two slots carry label -1.
    """

    def __init__(self, cfg: EfficientTAMConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.image_size = cfg.image_size
        self.feat_size = cfg.feat_size
        self.pe_layer = RandomFourierPositionEncoding(d // 2)
        # Embeddings for labels 0..3 (negative, positive, box corners), then the padding point.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, d) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, d)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, MASK_IN_CHANS // 4, kernel_size=2, stride=2),
            LayerNorm2d(MASK_IN_CHANS // 4),
            nn.GELU(),
            nn.Conv2d(MASK_IN_CHANS // 4, MASK_IN_CHANS, kernel_size=2, stride=2),
            LayerNorm2d(MASK_IN_CHANS),
            nn.GELU(),
            nn.Conv2d(MASK_IN_CHANS, d, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, d)
        # The labels that own an embedding, in the row order of the table built in `forward`.
        self.register_buffer("label_values", torch.tensor([-1.0, 0.0, 1.0, 2.0, 3.0]), persistent=False)
        self.register_buffer("dense_pe", self.pe_layer.grid(self.feat_size, self.feat_size), persistent=False)
        self.register_load_state_dict_post_hook(_refresh_after_load)

    @torch.no_grad()
    def refresh_dense_pe(self) -> None:
        """Recompute `dense_pe` from the Gaussian matrix; needed after changing it other than by loading."""
        self.dense_pe.copy_(self.pe_layer.grid(self.feat_size, self.feat_size))

    def forward(
        self,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        mask_weight: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed the prompt slots and the mask prompt.

        point_coords [B, P, 2] (x, y) in pixels of the S x S input frame; point_labels [B, P] (float or int);
        mask_input [B, 1, 4h, 4w] mask logits; mask_weight [B]: 1.0 embeds `mask_input`, 0.0 means "no mask"
        (the learned `no_mask_embed`). The mask branch always runs, so the graph is the same for both.
        Returns sparse [B, P, d_model] and dense [B, d_model, h, w].
        """
        pe = self.pe_layer((point_coords + 0.5) / self.image_size)  # +0.5: pixel centre, as the reference
        labels = point_labels.unsqueeze(-1)
        pe = torch.where(labels >= 0, pe, torch.zeros_like(pe))  # padding and empty slots have no position
        table = torch.cat([self.not_a_point_embed.weight, *(e.weight for e in self.point_embeddings)], dim=0)
        # An exact one-hot matmul: each row picks one table row (or none, for empty slots).
        one_hot = (labels == self.label_values).to(pe.dtype)
        sparse = pe + one_hot @ table

        weight = mask_weight.to(pe.dtype).reshape(-1, 1, 1, 1)
        no_mask = self.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = weight * self.mask_downscaling(mask_input) + (1 - weight) * no_mask
        return sparse, dense
