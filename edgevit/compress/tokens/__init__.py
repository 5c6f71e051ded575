"""Training-free token compression: Token Transforming (many-to-many token matrices, Zeng et al. 2025) and, at
the same per-block token counts, top-k attention pruning and ToMe merging, with fixed token counts so every
target exports the result, and the token grid restored for dense outputs."""

from edgevit.compress.tokens.compress import (
    TokenBudgetError,
    TokenReport,
    TokenSettings,
    compress_tokens,
    count_flops,
)
from edgevit.compress.tokens.matrices import METHODS

__all__ = ["METHODS", "TokenBudgetError", "TokenReport", "TokenSettings", "compress_tokens", "count_flops"]
