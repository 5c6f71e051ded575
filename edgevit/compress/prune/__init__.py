"""Structured pruning of vision transformers: whole attention heads and MLP channels, ranked by an importance
score on calibration inputs and removed for real (smaller weight matrices, fewer heads), under a budget of
parameters or FLOPs, with an optional short recovery distillation.

    from edgevit.compress.prune import PruneSettings, prune_module
    report = prune_module(model, PruneSettings(budget=0.3, score="taylor"), [(image,) for image in images])

`prunable_blocks` is the hook other parts use to find blocks (ED-ViT passes its own class-wise `loss`).
"""

from edgevit.compress.prune.blocks import BlockAdapter, PrunableBlock, prunable_blocks
from edgevit.compress.prune.measure import count_flops, count_params, fidelity_db, outputs
from edgevit.compress.prune.prune_module import (
    BY,
    SCORES,
    BlockKept,
    BudgetError,
    PruneReport,
    PruneSettings,
    prune_module,
)
from edgevit.compress.prune.recover import relative_mse

__all__ = [
    "BY",
    "SCORES",
    "BlockAdapter",
    "BlockKept",
    "BudgetError",
    "PrunableBlock",
    "PruneReport",
    "PruneSettings",
    "count_flops",
    "count_params",
    "fidelity_db",
    "outputs",
    "prunable_blocks",
    "prune_module",
    "relative_mse",
]
