"""Small models trained here, so quantization is measured on real (trained, non-random) weights.

Three students, each from the registry so every pass and converter treats them like any other model:
- `hybrid_distilled`: MobileViT-XXS at 128 px, 1000 classes, distilled from EfficientNet-Lite0;
- `vit_distilled`: a ViT (dim 192, depth 6, patch 16) at 128 px, 1000 classes, distilled the same way;
- `hybrid_digits`: MobileViT-XXS at 32 px (1-pixel patches) trained on scikit-learn's digits labels (10 classes),
  the one student whose quantized accuracy can be scored against true labels.
Distilled students are scored against the teacher on two sets of crops it was not trained on: crops of the
held-out sources (`edgevit.training.distill.eval_sources`), which are `Student.eval_images`, and fresh crops of
the training pictures. On the held-out sources top-1 agreement is bounded by how many of their teacher classes
the training pool contains at all, and with the pictures packages ship that share is close to zero (different
scenes, different ImageNet classes); so that bound is reported beside the agreement, and the fresh crops of
the training pictures show whether the student learned the teacher's function where it had data.

Trained weights are cached under `cache_dir` keyed by name, seed and a hash of everything that decides them
(recipe, the model's parameter shapes), written atomically and read back with `weights_only=True`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgevit.errors import EdgevitError
from edgevit.training.distill import (
    Crop,
    Picture,
    TrainConfig,
    eval_sources,
    full_images,
    load_pictures,
    normalizer,
    predict,
    random_crops,
    render,
    teacher_logits,
    train,
    train_sources,
)

STUDENTS: tuple[str, ...] = ("hybrid_distilled", "vit_distilled", "hybrid_digits")
TEACHER = "efficientnet_lite0"
EVAL_SEED = 7919  # the held-out crops are the same for every training seed
CACHE_FORMAT = 1  # bump when the meaning of a cached file changes


@dataclass(frozen=True)
class PoolConfig:
    """The distillation pool: random-resized crops of the training pictures, and held-out crops to score on."""

    crops: int = 1536
    eval_crops: int = 96
    scale: tuple[float, float] = (0.15, 1.0)
    train_frame_step: int = 10  # bikes.mp4: 25 of its 250 frames
    eval_frame_step: int = 6  # bigbuckbunny.mp4: 22 of its 132 frames


@dataclass(frozen=True)
class Recipe:
    """How a student is built (`create(family, variant, **overrides)`) and trained."""

    family: str
    variant: str
    overrides: tuple[tuple[str, Any], ...]
    train: TrainConfig
    teacher: str | None = None
    pool: PoolConfig | None = None  # distilled students only


RECIPES: dict[str, Recipe] = {
    "hybrid_distilled": Recipe(
        family="mobilevit",
        variant="mobilevit_xxs",
        overrides=(("img_size", 128), ("num_classes", 1000)),
        train=TrainConfig(epochs=2, batch_size=64, lr=2e-3, temperature=2.0),
        teacher=TEACHER,
        pool=PoolConfig(),
    ),
    "vit_distilled": Recipe(
        family="vit",
        variant="ti16_224",
        overrides=(("img_size", 128), ("depth", 6), ("num_classes", 1000)),
        train=TrainConfig(epochs=5, batch_size=64, lr=1e-3, temperature=2.0),
        teacher=TEACHER,
        pool=PoolConfig(),
    ),
    "hybrid_digits": Recipe(
        family="mobilevit",
        variant="mobilevit_xxs",
        overrides=(("img_size", 32), ("patch_size", 1), ("num_classes", 10)),
        train=TrainConfig(epochs=4, batch_size=64, lr=2e-3),
    ),
}


@dataclass
class Student:
    name: str
    model: nn.Module  # an EdgeModel built by edgevit.models.create(...) (has .spec, .deploy_units())
    teacher: str | None  # "efficientnet_lite0" or None
    calib: list[torch.Tensor]  # preprocessed 1x3xHxW images from the TRAINING sources (quantization calibration)
    eval_images: list[torch.Tensor]  # preprocessed 1x3xHxW images from held-out sources
    eval_labels: torch.Tensor | None  # true labels (digits) else None
    metrics: dict[str, float] = field(default_factory=dict)  # e.g. teacher agreement / accuracy, training seconds


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise EdgevitError(f"unknown student {name!r}; valid students: {', '.join(STUDENTS)}")
    return RECIPES[name]


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgevit" / "students"


def build(name: str, seed: int) -> nn.Module:
    """The untrained student, initialised from `seed` without disturbing the caller's RNG."""
    from edgevit.models import create

    r = recipe(name)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return create(r.family, variant=r.variant, **dict(r.overrides))


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cache_path(name: str, seed: int, cache_dir: Path | None = None, model: nn.Module | None = None) -> Path:
    """Where the trained weights of `name` at `seed` live; the key changes with the recipe or the architecture."""
    model = model if model is not None else build(name, seed)
    shapes = sorted((k, list(v.shape)) for k, v in model.state_dict().items())
    key = _digest({"format": CACHE_FORMAT, "recipe": dataclasses.asdict(recipe(name)), "shapes": shapes})
    return Path(cache_dir or default_cache_dir()) / f"{name}-seed{seed}-{key}.pt"


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """torch.save to a hidden temporary file beside `path`, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise EdgevitError(f"cached student {str(path)!r} is unreadable ({type(exc).__name__}); delete it") from None


def load_student(name: str, *, seed: int = 0, progress: bool = True, cache_dir: Path | None = None) -> Student:
    """The trained student `name`: from the cache when there, else trained now (minutes) and cached."""
    r = recipe(name)
    model = build(name, seed)
    path = cache_path(name, seed, cache_dir, model)
    cached = _read_cache(path) if path.is_file() else None
    if r.teacher is None:
        student = _digits_student(name, r, model, seed, cached, progress)
    else:
        student = _distilled_student(name, r, model, seed, cached, progress, path.parent)
    if cached is None:
        save_atomic({"model": model.state_dict(), "metrics": student.metrics}, path)
    model.weights_source = f"trained here: student {name}, seed {seed} ({path.name})"
    return student


def _digits_student(
    name: str, r: Recipe, model: nn.Module, seed: int, cached: dict[str, Any] | None, progress: bool
) -> Student:
    from edgevit.data.digits import load_digits_split

    split = load_digits_split(model.spec)
    if cached is not None:
        model.load_state_dict(cached["model"], strict=True)
        metrics = dict(cached["metrics"])
    else:
        result = train(
            model, split.train.images, split.train.labels, r.train, seed=seed, progress=progress, description=name
        )
        train_acc = (predict(model, split.train.images).argmax(-1) == split.train.labels).float().mean()
        test_acc = (predict(model, split.test.images).argmax(-1) == split.test.labels).float().mean()
        metrics = {
            "test_accuracy": test_acc.item(),
            "train_accuracy": train_acc.item(),
            "final_loss": result.losses[-1],
            "train_seconds": result.seconds,
            "train_cpu_seconds": result.cpu_seconds,
        }
    model.eval()
    return Student(
        name=name,
        model=model,
        teacher=None,
        calib=list(split.calib.images.split(1)),
        eval_images=list(split.test.images.split(1)),
        eval_labels=split.test.labels,
        metrics=metrics,
    )


def _teacher_pool_logits(
    r: Recipe,
    seed: int,
    teacher: nn.Module,
    pictures: Sequence[Picture],
    crops: Sequence[Crop],
    cache_dir: Path,
    progress: bool,
) -> tuple[torch.Tensor, float]:
    """The teacher's logits over the training crops, cached: both distilled students share one pool."""
    key = _digest({"format": CACHE_FORMAT, "teacher": r.teacher, "pool": dataclasses.asdict(r.pool), "seed": seed})
    path = cache_dir / f"teacher-{r.teacher}-seed{seed}-{key}.pt"
    if path.is_file():
        return _read_cache(path)["logits"], 0.0
    start = time.perf_counter()
    logits = teacher_logits(teacher, pictures, crops, progress=progress)
    seconds = time.perf_counter() - start
    save_atomic({"logits": logits}, path)
    return logits, seconds


def _distilled_student(
    name: str,
    r: Recipe,
    model: nn.Module,
    seed: int,
    cached: dict[str, Any] | None,
    progress: bool,
    cache_dir: Path,
) -> Student:
    from edgevit.models import create

    pool = r.pool
    assert pool is not None and r.teacher is not None  # a recipe with a teacher has a pool (RECIPES above)
    size = model.spec.input_size[0]
    prepare = normalizer(model.spec)
    train_pics = load_pictures(train_sources(pool.train_frame_step))
    eval_pics = load_pictures(eval_sources(pool.eval_frame_step))
    eval_crops = random_crops(eval_pics, pool.eval_crops, EVAL_SEED, pool.scale)
    eval_inputs = render(eval_pics, eval_crops, size)
    if cached is not None:
        model.load_state_dict(cached["model"], strict=True)
        metrics = dict(cached["metrics"])
    else:
        teacher = create(r.teacher)
        crops = random_crops(train_pics, pool.crops, seed, pool.scale)
        logits, teacher_seconds = _teacher_pool_logits(r, seed, teacher, train_pics, crops, cache_dir, progress)
        inputs = render(train_pics, crops, size)
        result = train(model, inputs, logits, r.train, seed=seed, prepare=prepare, progress=progress, description=name)
        unseen_crops = random_crops(train_pics, pool.eval_crops, EVAL_SEED, pool.scale)
        unseen_inputs = render(train_pics, unseen_crops, size)
        heldout = _agreement(model, teacher, eval_pics, eval_crops, eval_inputs, prepare, logits, progress)
        unseen = _agreement(model, teacher, train_pics, unseen_crops, unseen_inputs, prepare, logits, progress)
        train_top1 = predict(model, inputs, prepare=prepare).argmax(-1)
        metrics = {
            **{f"heldout_{k}": v for k, v in heldout.items()},
            **{f"unseen_crops_{k}": v for k, v in unseen.items()},
            "train_pool_top1_agreement": (train_top1 == logits.argmax(-1)).float().mean().item(),
            "final_loss": result.losses[-1],
            "train_seconds": result.seconds,
            "train_cpu_seconds": result.cpu_seconds,
            "teacher_seconds": teacher_seconds,
        }
    model.eval()
    return Student(
        name=name,
        model=model,
        teacher=r.teacher,
        calib=full_images(train_pics, model.spec),
        eval_images=list(prepare(eval_inputs).split(1)),
        eval_labels=None,
        metrics=metrics,
    )


def _agreement(
    model: nn.Module,
    teacher: nn.Module,
    pictures: Sequence[Picture],
    crops: Sequence[Crop],
    inputs: torch.Tensor,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    pool_logits: torch.Tensor,
    progress: bool,
) -> dict[str, float]:
    """How far the student answers like the teacher on `crops`, with the figures needed to judge that.

    `teacher_class_in_pool` is the ceiling of top-1 agreement: the share of these crops whose teacher top-1 is a
    class the teacher gave any training crop (a student cannot learn a class it was never shown as the answer).
    `majority_baseline` is what always answering the pool's most frequent teacher class would score, and
    `student_distinct_top1` how many classes the student answers with (a constant answer would make any
    quantized-vs-fp32 agreement measured on these images vacuous).
    """
    teacher_top = teacher_logits(teacher, pictures, crops, progress=progress)
    student_top1 = predict(model, inputs, prepare=prepare).argmax(-1)
    teacher_top1 = teacher_top.argmax(-1)
    pool_top1 = pool_logits.argmax(-1)
    return {
        "top1_agreement": (student_top1 == teacher_top1).float().mean().item(),
        "student_top1_in_teacher_top5": (teacher_top.topk(5).indices == student_top1[:, None])
        .any(-1)
        .float()
        .mean()
        .item(),
        "majority_baseline": (teacher_top1 == pool_top1.mode().values).float().mean().item(),
        "teacher_class_in_pool": torch.isin(teacher_top1, pool_top1).float().mean().item(),
        "student_distinct_top1": float(student_top1.unique().numel()),
    }


def quantize_flags(name: str) -> str:
    """The `--model/--variant/--set` flags that rebuild the student's architecture for `edgevit quantize`."""
    r = recipe(name)
    sets = " ".join(f"--set {shlex.quote(f'{k}={v!r}')}" for k, v in r.overrides)
    return f"--model {r.family} --variant {r.variant} {sets}"
