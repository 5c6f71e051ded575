"""MatFormer (Kudugunta et al., "MatFormer: Nested Transformer for Elastic Inference", 2023) for the MatViT family.

What the paper does, and what is here:
- Nested FFNs. Every block's MLP holds g nested widths (MatViT: {1/8, 1/4, 1/2, 1} of the full 4 x dim),
  each the first h_i hidden units of the next (`edgevit.models.matvit`).
- Joint training (`train`). The objective is the sum of the g nested sub-models' losses; the paper optimises it
  by sampling one granularity per step (uniformly) and back-propagating that sub-model's loss only, which costs
  one pass per step. Every width is trained, the small ones inside the large.
- Mix'n'Match (`search`). Any per-layer choice of widths is a working model, never trained as such; the paper
  finds the best ones change slowly across layers (non-decreasing, small steps). Here the candidates are those
  non-decreasing choices that fill a budget, plus a greedy per-layer walk, each scored on held-out labelled
  images; the winner is cut out as a dense ViT (`MatViT.extract`).
- Budgets in parameters (exact) or in latency measured through ONNX Runtime on this machine (`latency`).
"""

from edgevit.compress.matformer.latency import LatencyModel, measure_ms
from edgevit.compress.matformer.search import Candidate, mix_n_match, monotone_choices, score
from edgevit.compress.matformer.train import GranularitySampler, MatTrainConfig, train_matvit, trained

__all__ = [
    "Candidate",
    "GranularitySampler",
    "LatencyModel",
    "MatTrainConfig",
    "measure_ms",
    "mix_n_match",
    "monotone_choices",
    "score",
    "train_matvit",
    "trained",
]
