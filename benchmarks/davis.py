"""DAVIS-style video object segmentation scores: J (region IoU) and F (boundary F-measure), and the folder layout.

The definitions are the DAVIS benchmark's (Perazzi et al. 2016; `davis2017-evaluation`, davis2017/metrics.py):
- J: |prediction ∩ truth| / |prediction ∪ truth|, 1 when both are empty.
- F: each mask's boundary is the one-pixel set where the mask differs from its right, lower or lower-right
  neighbour (`seg2bmap`); a boundary pixel of one mask is matched when the other mask's boundary lies within a
  disk of radius ceil(0.008 · image diagonal) pixels; precision = matched prediction boundary / prediction
  boundary, recall = matched truth boundary / truth boundary, F = their harmonic mean (an empty boundary on one
  side only: precision or recall 0; on both: 1).
- A sequence's score is the mean over its frames after the first (the first is the prompt: its mask is given)
  and before the last, as the semi-supervised evaluation does (`all_gt_masks[:, 1:-1]`); J&F is (J + F) / 2.

Layout (DAVIS 2017): `JPEGImages/480p/<sequence>/<frame>.jpg` and `Annotations/480p/<sequence>/<frame>.png`, the
annotations palette PNGs whose pixel values are object ids (0 background, 255 "void" in DAVIS 2016 and ignored).
Only the first frame's annotation is needed to prompt; truth for the other frames is read where it exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

BOUNDARY_FRACTION = 0.008
VOID = 255


class DavisError(ValueError):
    """A folder that is not in DAVIS layout (or a sequence with no usable first annotation): one line."""


def region_j(prediction: np.ndarray, truth: np.ndarray) -> float:
    """J: intersection over union of two boolean masks of one shape; 1.0 when both are empty."""
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and truth {truth.shape} differ in shape")
    union = np.logical_or(prediction, truth).sum()
    return 1.0 if union == 0 else float(np.logical_and(prediction, truth).sum() / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """The one-pixel boundary of a boolean mask as DAVIS draws it: where the mask differs from its right, lower
    or lower-right neighbour (the last row and column compare along the edge only; the corner is never set)."""
    seg = np.asarray(mask, dtype=bool)
    right, down, diag = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    right[:, :-1], down[:-1, :], diag[:-1, :-1] = seg[:, 1:], seg[1:, :], seg[1:, 1:]
    edge = (seg ^ right) | (seg ^ down) | (seg ^ diag)
    edge[-1, :] = seg[-1, :] ^ right[-1, :]
    edge[:, -1] = seg[:, -1] ^ down[:, -1]
    edge[-1, -1] = False
    return edge


def tolerance_px(shape: tuple[int, ...]) -> int:
    """The matching radius in pixels: ceil(0.008 x the image diagonal)."""
    return math.ceil(BOUNDARY_FRACTION * math.hypot(shape[0], shape[1]))


def disk(radius: int) -> np.ndarray:
    """A filled disk of `radius` pixels (x² + y² <= r²), the structuring element DAVIS dilates with."""
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


def boundary_f(prediction: np.ndarray, truth: np.ndarray) -> float:
    """F: the boundary F-measure of `prediction` against `truth` (module docstring)."""
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and truth {truth.shape} differ in shape")
    pred_b, true_b = boundary_map(prediction), boundary_map(truth)
    n_pred, n_true = int(pred_b.sum()), int(true_b.sum())
    if n_pred == 0 or n_true == 0:
        return 1.0 if n_pred == n_true else 0.0
    element = disk(tolerance_px(truth.shape))
    precision = (pred_b & ndimage.binary_dilation(true_b, element)).sum() / n_pred
    recall = (true_b & ndimage.binary_dilation(pred_b, element)).sum() / n_true
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def sequence_scores(predictions: list[np.ndarray], truths: list[np.ndarray | None]) -> dict[str, object]:
    """Per-frame J and F of one object, and their means over the scored frames (not the first, not the last;
    frames without a truth annotation are skipped). None means when no frame can be scored."""
    j = [region_j(p, t) if t is not None else None for p, t in zip(predictions, truths, strict=True)]
    f = [boundary_f(p, t) if t is not None else None for p, t in zip(predictions, truths, strict=True)]
    scored = [i for i in range(1, len(truths) - 1) if truths[i] is not None]
    j_mean = float(np.mean([j[i] for i in scored])) if scored else None
    f_mean = float(np.mean([f[i] for i in scored])) if scored else None
    return {
        "J": j_mean,
        "F": f_mean,
        "J&F": None if j_mean is None or f_mean is None else (j_mean + f_mean) / 2,
        "frames_scored": len(scored),
        "per_frame_J": j,
        "per_frame_F": f,
    }


@dataclass(frozen=True)
class Sequence:
    """One DAVIS sequence: its frames in order and, per frame, the annotation file if there is one."""

    name: str
    frames: tuple[Path, ...]
    annotations: tuple[Path | None, ...]

    def first_objects(self) -> list[int]:
        """The object ids annotated on the first frame (the prompt of each object)."""
        ids = np.unique(read_annotation(self.annotations[0])) if self.annotations[0] else []
        return [int(i) for i in ids if i not in (0, VOID)]

    def truth(self, index: int, object_id: int) -> np.ndarray | None:
        path = self.annotations[index]
        return None if path is None else read_annotation(path) == object_id


def read_annotation(path: Path) -> np.ndarray:
    """An annotation PNG as its object ids (palette indices; a greyscale PNG's values are used as they are)."""
    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise DavisError(f"{path} is a {image.mode} image; DAVIS annotations are palette (or greyscale) PNGs")
        return np.asarray(image)


def read_davis(root: Path, resolution: str = "480p", sequences: list[str] | None = None) -> list[Sequence]:
    """The sequences of a DAVIS-layout folder (all, or those named), each with an annotated first frame."""
    root = Path(root)
    images, notes = root / "JPEGImages" / resolution, root / "Annotations" / resolution
    if not images.is_dir() or not notes.is_dir():
        raise DavisError(
            f"{root} is not in DAVIS layout: expected JPEGImages/{resolution}/<sequence>/*.jpg and "
            f"Annotations/{resolution}/<sequence>/*.png"
        )
    names = sequences or sorted(p.name for p in images.iterdir() if p.is_dir())
    found = []
    for name in names:
        frames = tuple(sorted((images / name).glob("*.jpg")))
        if not frames:
            raise DavisError(f"sequence {name!r} has no frames in {images / name}")
        annotations = tuple(p if (p := notes / name / f"{f.stem}.png").is_file() else None for f in frames)
        if annotations[0] is None:
            raise DavisError(f"sequence {name!r} has no annotation of its first frame ({frames[0].stem}.png)")
        found.append(Sequence(name, frames, annotations))
    if not found:
        raise DavisError(f"{images} holds no sequence folder")
    return found
