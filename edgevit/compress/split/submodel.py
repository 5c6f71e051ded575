"""One sub-model per class subset: the full classifier, pruned for its classes, re-headed, distilled.

A sub-model answers `k + 1` scores: its `k` classes and "other" (none of them). Its targets are the full
model's probabilities collapsed onto those outputs (`collapse`: its classes' probabilities, and the sum of all
the rest as "other"), so a product of the sub-models' answers approximates the full model (see `fusion`).

1. Class-wise pruning: heads and MLP channels are scored and removed (`edgevit.compress.prune.prune_module`)
   with a loss that only sees the collapsed distribution: what matters is telling these classes apart from each
   other and from the rest, not the full model's ranking among the other classes.
2. The head keeps its classes' rows; the "other" row starts from the mean of the remaining rows (their bias:
   log-sum-exp of their biases), a start that distillation then corrects.
3. Distillation (KL to the collapsed targets) on the training images of every class, for a few epochs.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from edgevit.errors import EdgevitError

PRUNE_BATCHES = 4  # calibration batches the pruning scores are measured on
PRUNE_BATCH_SIZE = 32


class Classifier(Protocol):
    """What a split needs of a model: a linear `head` giving the logits, and a config dataclass naming their
    count (`cfg.num_classes`), so the sub-model's manifest says how many outputs it has."""

    head: nn.Linear
    cfg: Any


@dataclass(frozen=True)
class DistillSettings:
    epochs: int = 4
    batch_size: int = 64
    lr: float = 1e-3
    temperature: float = 1.0


def partition_classes(num_classes: int, parts: int) -> list[list[int]]:
    """`parts` contiguous subsets of near-equal size (the first ones one larger), as ED-ViT splits its classes."""
    if parts > num_classes:
        raise EdgevitError(
            f"{parts} devices but only {num_classes} classes: each device needs at least one class; "
            f"list at most {num_classes} devices"
        )
    size, extra = divmod(num_classes, parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + size + (1 if i < extra else 0))
    return [list(range(bounds[i], bounds[i + 1])) for i in range(parts)]


def collapse(logits: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Log-probabilities over `classes` + "other" from full-model logits (`B x C` → `B x (k+1)`)."""
    logp = F.log_softmax(logits, dim=-1)
    rest = torch.ones(logits.shape[-1], dtype=torch.bool)
    rest[list(classes)] = False
    other = torch.logsumexp(logp[:, rest], dim=-1, keepdim=True)
    return torch.cat([logp[:, list(classes)], other], dim=-1)


def class_wise_loss(classes: Sequence[int]):
    """The pruning loss of one subset: KL(reference || pruned) on the collapsed distributions."""

    def loss(pruned_out: torch.Tensor, reference_out: torch.Tensor) -> torch.Tensor:
        target = collapse(reference_out, classes)
        return F.kl_div(collapse(pruned_out, classes), target, reduction="batchmean", log_target=True)

    return loss


def check_classifier(model: nn.Module, num_classes: int) -> None:
    head, cfg = getattr(model, "head", None), getattr(model, "cfg", None)
    if not isinstance(head, nn.Linear) or not dataclasses.is_dataclass(cfg) or not hasattr(cfg, "num_classes"):
        raise EdgevitError(
            f"{type(model).__name__} has no linear `head` and `cfg.num_classes`; ED-ViT splits such classifiers "
            "(e.g. --model vit)"
        )
    if head.out_features != num_classes:
        raise EdgevitError(
            f"the model has {head.out_features} classes but the data has {num_classes}; pass the checkpoint of a "
            f"classifier trained on these classes (--set num_classes={num_classes})"
        )


def prune_settings(budget: float, seed: int):
    """Class-wise pruning's settings: a Taylor score (it follows the class-wise loss), `budget` of the parameters."""
    from edgevit.compress.prune import PruneSettings

    settings = PruneSettings(budget=budget, score="taylor", seed=seed)
    settings.check()
    return settings


def prune_for(
    full: nn.Module, classes: Sequence[int], budget: float, images: torch.Tensor, seed: int
) -> tuple[nn.Module, dict[str, Any]]:
    """A copy of `full` with heads and MLP channels removed (`budget`: the fraction of its parameters; 0 keeps
    them all), scored by what they do for `classes`; and the pruning report as plain JSON."""
    from edgevit.compress.prune import prune_module

    sub = copy.deepcopy(full).eval()
    if budget == 0:
        return sub, {"budget": 0.0, "params_before": parameter_count(sub), "params_after": parameter_count(sub)}
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    count = min(PRUNE_BATCHES, max(1, len(images) // PRUNE_BATCH_SIZE))
    batches = [(images[order[i * PRUNE_BATCH_SIZE : (i + 1) * PRUNE_BATCH_SIZE]],) for i in range(count)]
    report = prune_module(sub, prune_settings(budget, seed), batches, loss=class_wise_loss(classes))
    return sub, report.to_json()


def rehead(sub: nn.Module, classes: Sequence[int]) -> None:
    """Replace the head by one scoring `classes` + "other" (see the module docstring), and say so in `cfg`."""
    old = sub.head
    rest = [c for c in range(old.out_features) if c not in set(classes)]
    head = nn.Linear(old.in_features, len(classes) + 1)
    with torch.no_grad():
        head.weight[:-1] = old.weight[list(classes)]
        head.weight[-1] = old.weight[rest].mean(dim=0)
        head.bias[:-1] = old.bias[list(classes)]
        head.bias[-1] = torch.logsumexp(old.bias[rest], dim=0)
    sub.head = head
    sub.cfg = dataclasses.replace(sub.cfg, num_classes=len(classes) + 1)


def distill(
    sub: nn.Module,
    images: torch.Tensor,
    teacher_logits: torch.Tensor,
    classes: Sequence[int],
    settings: DistillSettings,
    seed: int,
    progress: bool,
    description: str,
) -> dict[str, float]:
    """Train `sub` on the full model's collapsed probabilities; returns the final loss and the time taken."""
    from edgevit.training.distill import TrainConfig, train

    targets = collapse(teacher_logits, classes)  # log-probabilities: train() softens them with log_softmax(x / T)
    batch = min(settings.batch_size, len(images))
    config = TrainConfig(settings.epochs, batch, settings.lr, temperature=settings.temperature)
    result = train(sub, images, targets, config, seed=seed, progress=progress, description=description)
    return {"final_loss": result.losses[-1], "seconds": result.seconds, "steps": len(result.losses)}


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
