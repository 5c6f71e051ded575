"""scikit-learn's 1,797 labelled 8x8 digits as RGB image tensors: the one labelled image set available offline.

Every other image here (packaged photos, video frames) is unlabelled, so a quantized model can only be compared
with its fp32 self; on digits it can be scored against true labels. The split is fixed (its own seed, not the
training seed) so that a model trained with any seed is tested on the same held-out digits, and calibration
images come from neither the training nor the test part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edgevit.errors import EdgevitError
from edgevit.models.spec import ModelSpec

NUM_CLASSES = 10
SPLIT_SEED = 20240607  # fixed: the split never depends on a training seed
TEST_FRACTION = 0.2
CALIB_SIZE = 64
INK_MAX = 16.0  # load_digits() pixel values are ink counts 0..16


@dataclass(frozen=True)
class LabelledImages:
    """N preprocessed images with their labels and their row in `load_digits()` (to prove splits disjoint)."""

    images: torch.Tensor  # N x 3 x H x W float32, normalised per the ModelSpec
    labels: torch.Tensor  # N int64 in 0..9
    indices: torch.Tensor  # N int64 rows of sklearn's array

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DigitsSplit:
    train: LabelledImages
    calib: LabelledImages
    test: LabelledImages


def digits_to_images(pixels: np.ndarray, spec: ModelSpec) -> torch.Tensor:
    """`N x 8 x 8` ink counts -> `N x 3 x H x W` normalised RGB at the spec's input size.

    Bilinear upsampling keeps strokes smooth (nearest would hand the model 8x8 blocks no camera produces);
    grey is replicated to three channels so the model has the input layout of every other image model.
    """
    height, width = spec.input_size
    x = torch.from_numpy(np.asarray(pixels, dtype=np.float32) / INK_MAX)[:, None]
    x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def load_digits_split(
    spec: ModelSpec, *, test_fraction: float = TEST_FRACTION, calib_size: int = CALIB_SIZE
) -> DigitsSplit:
    """The digits preprocessed for `spec`, split into disjoint train / calibration / test parts.

    One fixed permutation decides the parts: test takes the first `test_fraction`, calibration the next
    `calib_size`, training the rest.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise EdgevitError("the digits data set needs scikit-learn: pip install scikit-learn") from None
    digits = load_digits()
    n = len(digits.target)
    n_test = round(n * test_fraction)
    if not (0 < n_test and n_test + calib_size < n):
        raise EdgevitError(f"digits: test_fraction {test_fraction} and calib_size {calib_size} leave no training set")
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    images = digits_to_images(digits.images, spec)
    labels = torch.from_numpy(digits.target.astype(np.int64))

    def part(rows: np.ndarray) -> LabelledImages:
        idx = torch.from_numpy(np.sort(rows).astype(np.int64))
        return LabelledImages(images[idx], labels[idx], idx)

    return DigitsSplit(
        train=part(order[n_test + calib_size :]),
        calib=part(order[n_test : n_test + calib_size]),
        test=part(order[:n_test]),
    )
