"""`scaled_dot_product_attention` as bmm → softmax → bmm, the form the XNNPACK-backed runtimes run whole.

Both ExecuTorch and LiteRT lower SDPA through their own decompositions, and each leaves part of it off XNNPACK:
- ExecuTorch's uses the "safe" softmax, which guards fully-masked rows with eq/logical_not/any/where/full_like
  over the whole attention matrix — ops XNNPACK does not take, so every attention block left five
  portable-kernel passes over an N×N tensor and split the graph (ViT-S/16 on this CPU: 71 → 51 ms).
- litert-torch turns Q·Kᵀ (a matmul whose right operand is a transposed tensor) into a FULLY_CONNECTED with a
  run-time weight, which LiteRT's XNNPACK delegate does not take: the scores ran on the builtin kernel and split
  the graph (one EfficientTAM memory cross-attention, 1024 queries × 7232 keys, 1 thread: 336 ms vs 182 ms when
  the keys are transposed by an explicit TRANSPOSE and both products are BATCH_MATMULs; eager SDPA 203 ms).
  A transpose of a 4-D view survives as a TRANSPOSE op (a 3-D `transpose(1, 2)` is folded into the FC again).

Plain softmax equals the safe one unless a whole row is -inf; masks written in this project use finite large
negatives, and an unmasked call cannot have such a row. A boolean-masked, causal, dropout or GQA call keeps the
runtime's own decomposition (NotImplemented).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def plain_softmax_sdpa(explicit_transpose: bool = False) -> Callable[..., torch.Tensor]:
    """The decomposition for `ExportedProgram.run_decompositions({aten.scaled_dot_product_attention: ...})`;
    `explicit_transpose` writes Kᵀ as a transpose of a 4-D view (LiteRT), else as `transpose(1, 2)`."""

    def sdpa(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> torch.Tensor:
        if (attn_mask is not None and not attn_mask.is_floating_point()) or is_causal or dropout_p or enable_gqa:
            return NotImplemented
        scale = q.size(-1) ** -0.5 if scale is None else scale
        # bmm on 3-D views: a 4-D matmul decomposes into expand_copy + bmm, and XNNPACK leaves expand_copy out
        *batch, n, e = q.shape
        m = k.shape[-2]
        if explicit_transpose:
            keys_t = k.reshape(-1, m, e, 1).permute(0, 3, 2, 1).reshape(-1, e, m)
        else:
            keys_t = k.reshape(-1, m, e).transpose(1, 2)
        scores = torch.bmm(q.reshape(-1, n, e), keys_t) * scale
        if attn_mask is not None:
            scores = (scores.reshape(*batch, n, m) + attn_mask).reshape(-1, n, m)
        out = torch.bmm(torch.softmax(scores, dim=-1), v.reshape(-1, m, v.shape[-1]))
        return out.reshape(*batch, n, v.shape[-1])

    return sdpa
