from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest_plugins = ("tests.skip_gate",)  # a skip outside its allow-list fails the run


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    """Tests run tiny models on a shared 2-core VM: a second OpenMP thread only adds spinning contention."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def efficienttam_tiny(tmp_path_factory) -> tuple[torch.nn.Module, Path, Path]:
    """(model, bundle, checkpoint): EfficientTAM-Ti at 128 px converted from a checkpoint to every runnable
    target, shared by the tests that drive converted trackers (tests/test_bundle.py, benchmarks' bench).

    Random weights say "no object" everywhere (all logits -1024, STACK.md), which would make every comparison
    vacuous; the object-score bias is raised so masks cover part of the frame with logits near zero.
    """
    from edgevit.bundle import write_bundle
    from edgevit.models import create

    torch.manual_seed(0)
    # a shallower trunk and memory attention, every layer kind kept: 12 conversions take far less time
    model = create("efficienttam_ti", image_size=128, depth=3, memory_attention_layers=2)
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(20.0)
    root = tmp_path_factory.mktemp("etam")
    checkpoint = root / "ti128.pt"
    torch.save({"model": model.state_dict()}, checkpoint)
    write_bundle(model, ("onnx", "executorch", "tflite"), None, root / "bundle", checkpoint=checkpoint)
    return model, root / "bundle", checkpoint
