from __future__ import annotations

import pytest
import torch

from tests.quant.tiny_vit import TinyViT, image_batches, make_tiny_vit


@pytest.fixture
def model() -> TinyViT:
    return make_tiny_vit()


@pytest.fixture(scope="session")
def calib() -> list[torch.Tensor]:
    return image_batches(8, seed=1)


@pytest.fixture(scope="session")
def evalset() -> list[torch.Tensor]:
    return image_batches(4, seed=2)
