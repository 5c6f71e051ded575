from __future__ import annotations

import pytest
import torch

pytest_plugins = ("tests.skip_gate",)  # a skip outside its allow-list fails the run


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    """Tests run tiny models on a shared 2-core VM: a second OpenMP thread only adds spinning contention."""
    torch.set_num_threads(1)
