"""MatFormer training: every nested MLP width optimised jointly, by drawing one granularity per step.

MatFormer's objective is the sum of the losses of its nested sub-models M_1 ⊂ ... ⊂ M_g (each the model with
every block's MLP at one width); rather than g forward/backward passes per step, the paper samples one
granularity per step, which trains every width for the cost of one pass. `GranularitySampler` does that draw
(uniform, from its own seeded generator) before each training-mode forward, so the ordinary training loop of
`edgevit.training.distill.train` (AdamW, warmup + cosine, seeded data order) runs unchanged.

Trained weights are cached like the students' (`edgevit.training.students`): keyed by the model's shapes, the
data's fingerprint, the schedule and the seed, written atomically and read back with `weights_only=True`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgevit.data.labelled import LabelledData
from edgevit.errors import EdgevitError
from edgevit.models.matvit import MatViT

CACHE_FORMAT = 1


@dataclass(frozen=True)
class MatTrainConfig:
    """The schedule: epochs over the training images, batch size, AdamW's learning rate and weight decay."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05


@dataclass
class MatTrained:
    model: MatViT
    metrics: dict[str, float]  # test accuracy at each uniform granularity, final loss, seconds
    losses: list[float]  # one per step
    drawn: list[int]  # the granularity index each step trained


class GranularitySampler:
    """A forward pre-hook: before each training-mode forward, draw one granularity index (uniform) for every
    block; evaluation forwards run at whatever granularity was last set."""

    def __init__(self, model: MatViT, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.count = len(model.cfg.granularities)
        self.drawn: list[int] = []
        self.handle = model.register_forward_pre_hook(self)

    def __call__(self, module: nn.Module, args: Any) -> None:
        if module.training:
            g = int(torch.randint(self.count, (1,), generator=self.generator))
            module.set_granularity(g)
            self.drawn.append(g)

    def remove(self) -> None:
        self.handle.remove()


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of `model` (eval mode) on labelled images."""
    from edgevit.training.distill import predict

    return (predict(model, images).argmax(-1) == labels).float().mean().item()


def granularity_accuracies(model: MatViT, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy at each uniform granularity, keyed `accuracy@<fraction>`; the model is left at full width."""
    found = {}
    for g, fraction in enumerate(model.cfg.granularities):
        model.set_granularity(g)
        found[f"accuracy@{fraction:g}"] = accuracy(model, images, labels)
    model.set_granularity(len(model.cfg.granularities) - 1)
    return found


def train_matvit(
    model: MatViT, data: LabelledData, cfg: MatTrainConfig, *, seed: int, progress: bool = True
) -> MatTrained:
    """Train `model` in place on `data.train` with one granularity drawn per step; scored on `data.test`."""
    from edgevit.training.distill import TrainConfig, train

    if not isinstance(model, MatViT):
        raise EdgevitError(f"MatFormer training needs a matvit model, not {model.spec.name}")
    if model.cfg.num_classes != len(data.classes):
        raise EdgevitError(
            f"the model has {model.cfg.num_classes} classes and the data {len(data.classes)}; "
            f"--set num_classes={len(data.classes)}"
        )
    batch = min(cfg.batch_size, len(data.train))  # a small folder of the user's still trains, in one batch
    schedule = TrainConfig(epochs=cfg.epochs, batch_size=batch, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = GranularitySampler(model, seed)
    try:
        result = train(
            model, data.train.images, data.train.labels, schedule, seed=seed, progress=progress, description="matvit"
        )
    finally:
        sampler.remove()
    metrics = granularity_accuracies(model, data.test.images, data.test.labels)
    metrics.update({"final_loss": result.losses[-1], "train_seconds": result.seconds, "steps": len(result.losses)})
    return MatTrained(model, metrics, result.losses, sampler.drawn)


def cache_path(model: MatViT, data: LabelledData, cfg: MatTrainConfig, seed: int, cache_dir: Path | None) -> Path:
    """Where these trained weights live: the key changes with the architecture, the data, the schedule or the seed."""
    from edgevit.training.students import default_cache_dir

    shapes = sorted((k, list(v.shape)) for k, v in model.state_dict().items())
    blob = {"format": CACHE_FORMAT, "cfg": dataclasses.asdict(model.cfg), "shapes": shapes}
    blob.update({"data": data.fingerprint, "train": dataclasses.asdict(cfg), "seed": seed})
    key = hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir().parent / "matformer"
    return folder / f"{model.spec.variant}-seed{seed}-{key}.pt"


def trained(
    model: MatViT,
    data: LabelledData,
    cfg: MatTrainConfig,
    *,
    seed: int,
    progress: bool = True,
    cache_dir: Path | None = None,
) -> tuple[dict[str, float], Path, bool]:
    """Train `model` (or load its cached weights): returns its metrics, the cache file and whether it was cached."""
    from edgevit.training.students import save_atomic

    path = cache_path(model, data, cfg, seed, cache_dir)
    if path.is_file():
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many kinds for a damaged file
            raise EdgevitError(f"cached MatViT {str(path)!r} is unreadable ({type(exc).__name__}); delete it") from None
        model.load_state_dict(cached["model"], strict=True)
        model.eval()
        return dict(cached["metrics"]), path, True
    result = train_matvit(model, data, cfg, seed=seed, progress=progress)
    save_atomic({"model": model.state_dict(), "metrics": result.metrics}, path)
    return result.metrics, path, False
