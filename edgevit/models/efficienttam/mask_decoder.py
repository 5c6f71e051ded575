"""EfficientTAM's SAM mask decoder (two-way transformer) over a fixed number of prompt slots.

Weight-compatible with the reference `sam_mask_decoder` (same state-dict keys and shapes). Differences that
make it exportable with static shapes:
- Prompt slots that are not in use are masked out as attention *keys* (token self-attention and
  image-to-token cross-attention) with an additive bias, so a prompt of n tokens padded to `cfg.max_points`
  slots gives the reference's result for those n tokens. Empty slots still flow through as queries; nothing
  reads their outputs.
- No multimask branching: all four masks, IoU scores and mask tokens come out, and the choice the reference
  makes inside (multimask, dynamic stability fallback, no-object masking) is in `edgevit.video.mask_selection`,
  run by the tracker.
"""

from __future__ import annotations

import torch
from torch import nn

from edgevit.models.efficienttam.config import EfficientTAMConfig
from edgevit.models.layers import MLP, LayerNorm2d

NUM_MULTIMASK_OUTPUTS = 3
NUM_MASK_TOKENS = NUM_MULTIMASK_OUTPUTS + 1
NUM_OUTPUT_TOKENS = NUM_MASK_TOKENS + 2  # object-score token, IoU token, mask tokens
TRANSFORMER_DEPTH = 2
NUM_HEADS = 8
MLP_DIM = 2048
ATTENTION_DOWNSAMPLE_RATE = 2
MASKED_KEY_BIAS = -1.0e4
"""Added to the attention logits of masked keys. Finite (not -inf) so fp16 backends and quantization observers
see ordinary numbers; the softmax weight it leaves is exp(-1e4) == 0 in fp32 and fp16."""


class Attention(nn.Module):
    """Multi-head attention; projections may shrink the width by `downsample_rate` (SAM's cross-attention).

    Written as bmm + softmax rather than `F.scaled_dot_product_attention`: the latter decomposes, for
    ExecuTorch, into a "safe softmax" (eq/any/logical_not/where/full_like per call) that XNNPACK leaves
    undelegated, and into 4-D matmuls with batch `expand` copies; 3-D bmm avoids both.
    """

    def __init__(self, dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        inner = dim // downsample_rate
        self.num_heads = num_heads
        self.scale = (inner // num_heads) ** -0.5
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, C] -> [B * heads, N, C / heads]."""
        b, n, c = x.shape
        x = x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)
        return x.reshape(b * self.num_heads, n, c // self.num_heads)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """key_bias [B, 1, 1, Nk] is added to the logits of every head and query."""
        b, nq, _ = q.shape
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        logits = torch.bmm(q * self.scale, k.transpose(1, 2))
        if key_bias is not None:  # a structural choice per call site, not a data-dependent branch
            logits = (logits.reshape(b, self.num_heads, nq, -1) + key_bias).reshape(b * self.num_heads, nq, -1)
        out = torch.bmm(logits.softmax(dim=-1), v)
        out = out.reshape(b, self.num_heads, nq, -1).transpose(1, 2).reshape(b, nq, -1)
        return self.out_proj(out)


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token-to-image attention, token MLP, then image-to-token attention."""

    def __init__(self, dim: int, skip_first_layer_pe: bool) -> None:
        super().__init__()
        self.self_attn = Attention(dim, NUM_HEADS)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, NUM_HEADS, ATTENTION_DOWNSAMPLE_RATE)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, MLP_DIM, dim, num_layers=2)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, NUM_HEADS, ATTENTION_DOWNSAMPLE_RATE)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        token_bias: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # The first block's tokens *are* their positional encoding: it neither adds it nor keeps a residual.
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries, token_bias)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries, token_bias)
        queries = self.norm1(queries)

        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, k, keys))
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries, token_bias))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """Prompt tokens and image tokens attending to each other, then a last token-to-image attention."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(dim, skip_first_layer_pe=i == 0) for i in range(TRANSFORMER_DEPTH)
        )
        self.final_attn_token_to_image = Attention(dim, NUM_HEADS, ATTENTION_DOWNSAMPLE_RATE)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(
        self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor, token_bias: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image [B, C, h, w], image_pe [1, C, h, w], tokens [B, N, C] -> tokens, image [B, hw, C]."""
        keys = image.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe, token_bias)
        attn = self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys


class MaskDecoder(nn.Module):
    """Image features + prompt embeddings -> all four mask logits, IoU scores, mask tokens, object score."""

    def __init__(self, cfg: EfficientTAMConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.transformer = TwoWayTransformer(d)
        self.iou_token = nn.Embedding(1, d)
        self.mask_tokens = nn.Embedding(NUM_MASK_TOKENS, d)
        self.obj_score_token = nn.Embedding(1, d)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(d, d // 4, kernel_size=2, stride=2),
            LayerNorm2d(d // 4),
            nn.GELU(),
            nn.ConvTranspose2d(d // 4, d // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(d, d, d // 8, 3) for _ in range(NUM_MASK_TOKENS))
        self.iou_prediction_head = MLP(d, d, NUM_MASK_TOKENS, 3, sigmoid_output=True)
        self.pred_obj_score_head = MLP(d, d, 1, 3)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        token_valid: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode masks for every output token.

        image_embeddings [B, C, h, w]; image_pe [1, C, h, w] (`PromptEncoder.dense_pe`); sparse [B, P, C] and
        dense [B, C, h, w] from the prompt encoder; token_valid [B, P] (bool or 0/1), false for empty slots.
        Returns masks [B, 4, 4h, 4w] (index 0 the single-mask output, 1..3 the multimask outputs),
        iou_pred [B, 4], mask_tokens_out [B, 4, C], object_score_logits [B, 1].
        """
        b, c, h, w = image_embeddings.shape
        output_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight])
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        slot_bias = (token_valid == 0).to(sparse.dtype) * MASKED_KEY_BIAS
        token_bias = torch.cat([slot_bias.new_zeros(b, NUM_OUTPUT_TOKENS), slot_bias], dim=1)
        token_bias = token_bias.reshape(b, 1, 1, -1)  # one bias per key, for every head and query

        hs, src = self.transformer(image_embeddings + dense, image_pe, tokens, token_bias)
        mask_tokens_out = hs[:, 2 : 2 + NUM_MASK_TOKENS]

        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        masks = torch.bmm(hyper_in, upscaled.flatten(2)).reshape(b, NUM_MASK_TOKENS, 4 * h, 4 * w)
        iou_pred = self.iou_prediction_head(hs[:, 1])
        object_score_logits = self.pred_obj_score_head(hs[:, 0])
        return masks, iou_pred, mask_tokens_out, object_score_logits
