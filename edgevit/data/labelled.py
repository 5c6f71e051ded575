"""Labelled images: scikit-learn's digits, or a user's folder of class sub-folders.

Training (MatFormer, ED-ViT's sub-models) needs labels, and selection (Mix'n'Match candidates, ED-ViT's fused
accuracy) needs held-out labelled images, so the same source gives both, split the same way every time:
- "builtin": the digits (`edgevit.data.digits`) at the model's input size; training takes the digits' training
  part, selection their calibration part (never trained on) and the reported figures their test part;
- a folder with one sub-folder per class (the sub-folder's name is the class): every fifth image of each class
  in name order (the last one of a class of fewer than five) is held out, for selection and the reported
  figures; the rest train.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from edgevit.errors import EdgevitError
from edgevit.models.spec import ModelSpec

HOLD_OUT_EVERY = 5  # a folder: every fifth image of a class is held out
SELECT_SIZE = 160  # digits held out for Mix'n'Match selection (their calibration part)


@dataclass(frozen=True)
class Labelled:
    images: torch.Tensor  # N x 3 x H x W, normalised for the model
    labels: torch.Tensor  # N int64

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class LabelledData:
    """Training images, held-out images for selection, held-out images to report, the class names, and a
    fingerprint of the source (a training cache key)."""

    train: Labelled
    select: Labelled
    test: Labelled
    classes: tuple[str, ...]
    fingerprint: str


def load_labelled(source: str | Path, spec: ModelSpec) -> LabelledData:
    """The labelled data of `source` ("builtin" or a folder of class sub-folders), preprocessed for `spec`."""
    if str(source) == "builtin":
        return _digits(spec)
    return _folder(Path(source), spec)


def _digits(spec: ModelSpec) -> LabelledData:
    from edgevit.data.digits import NUM_CLASSES, SPLIT_SEED, load_digits_split

    split = load_digits_split(spec, calib_size=SELECT_SIZE)

    def part(p) -> Labelled:
        return Labelled(p.images, p.labels)

    classes = tuple(str(i) for i in range(NUM_CLASSES))
    fingerprint = f"sklearn-digits-split{SPLIT_SEED}-select{SELECT_SIZE}-{spec.input_size[0]}"
    return LabelledData(part(split.train), part(split.calib), part(split.test), classes, fingerprint)


def _folder(root: Path, spec: ModelSpec) -> LabelledData:
    from edgevit.data.images import image_files, load_image, preprocess

    if not root.is_dir():
        raise EdgevitError(f"--data {root} is not a folder; pass a folder with one sub-folder of images per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise EdgevitError(
            f"--data {root} holds {len(classes)} class sub-folder(s); a classifier needs at least 2 (one per class)"
        )
    digest = hashlib.sha256()
    parts: dict[str, list[tuple[torch.Tensor, int]]] = {"train": [], "held": []}
    for label, name in enumerate(classes):
        files = image_files(root / name)
        if len(files) < 2:
            raise EdgevitError(
                f"class folder {root / name} holds {len(files)} image(s); each class needs at least 2 "
                "(one to train on, one held out)"
            )
        for i, path in enumerate(files):
            stat = path.stat()
            digest.update(f"{name}/{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
            fifth = i % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1
            last_of_few = i == len(files) - 1 and len(files) < HOLD_OUT_EVERY  # a small class still holds one out
            which = "held" if fifth or last_of_few else "train"
            parts[which].append((preprocess(load_image(path), spec), label))

    def stack(items: list[tuple[torch.Tensor, int]]) -> Labelled:
        return Labelled(torch.cat([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.int64))

    held = stack(parts["held"])
    fingerprint = f"folder-{digest.hexdigest()[:16]}-{spec.input_size[0]}"
    return LabelledData(stack(parts["train"]), held, held, tuple(classes), fingerprint)
