"""scikit-learn's digits as image tensors: shapes, labels, normalisation and a fixed, disjoint split."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("sklearn", reason="the digits come from scikit-learn: pip install scikit-learn")

from edgevit.data.digits import NUM_CLASSES, load_digits_split  # noqa: E402
from edgevit.models.spec import ModelSpec  # noqa: E402

RAW = ModelSpec("test", "raw", (32, 32), "classification", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def split():
    return load_digits_split(RAW)


def test_shapes_labels_and_range(split) -> None:
    for part in (split.train, split.calib, split.test):
        n = len(part)
        assert part.images.shape == (n, 3, 32, 32) and part.images.dtype == torch.float32
        assert part.labels.shape == (n,) and part.labels.dtype == torch.int64
        assert torch.equal(part.images[:, 0], part.images[:, 2])  # grey replicated to RGB
    assert 0.0 <= split.train.images.min() and split.train.images.max() <= 1.0
    assert set(split.test.labels.tolist()) == set(range(NUM_CLASSES))
    assert set(split.train.labels.tolist()) == set(range(NUM_CLASSES))


def test_split_is_disjoint_complete_and_fixed(split) -> None:
    parts = [set(p.indices.tolist()) for p in (split.train, split.calib, split.test)]
    assert sum(len(p) for p in parts) == len(set().union(*parts)) == 1797
    assert (len(split.calib), len(split.test)) == (64, 359)
    again = load_digits_split(RAW)
    assert torch.equal(again.test.indices, split.test.indices) and torch.equal(again.test.images, split.test.images)


def test_normalised_per_spec_at_its_size(split) -> None:
    spec = ModelSpec("test", "imagenet", (64, 64), "classification")
    other = load_digits_split(spec)
    assert other.test.images.shape[-2:] == (64, 64)
    red = other.test.images[:, 0]
    background = (0.0 - spec.mean[0]) / spec.std[0]
    assert torch.isclose(red.min(), torch.tensor(background), atol=1e-5)
