"""Which models the video loop drives: the one whose spec declares `loop="video"`, never a name match."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from edgevit.errors import EdgevitError
from edgevit.models import create, families
from edgevit.video.assemble import make_tracker
from edgevit.video.tracker import UNIT_NAMES


def _spec(fam):
    variant = fam.default_variant
    try:  # importers copying real weights into meta tensors warn that the copy is a no-op: it is
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return fam.build(fam.variants[variant], variant).spec
    except (NotImplementedError, RuntimeError):  # a builder that reads real weights (as `edgevit models` does)
        return fam.build(fam.variants[variant], variant).spec


def test_only_efficienttam_declares_the_video_loop() -> None:
    loops = {name: _spec(fam).loop for name, fam in families().items()}
    assert loops.pop("efficienttam") == "video"
    assert {"mobilevit", "efficientformer", "vit"} <= set(loops) and set(loops.values()) == {"single"}, loops
    with torch.device("meta"):
        spec = create("efficienttam_ti").spec
    assert spec.to_dict()["loop"] == "video"  # what the bundle manifest's model section carries


def test_eager_tracker_from_a_video_model() -> None:
    tracker, source = make_tracker("efficienttam", "ti", None, None, None)
    assert set(tracker.run) == set(UNIT_NAMES) and tracker.cfg.image_size == 1024
    assert source == {"model": "efficienttam_ti", "runtime": "eager torch", "weights": "random"}


def test_a_single_image_model_is_refused_before_its_checkpoint_is_read(tmp_path: Path) -> None:
    missing = tmp_path / "never-read.pt"
    with pytest.raises(EdgevitError, match="model 'mobilevit' does not track video; use efficienttam"):
        make_tracker("mobilevit_xxs", None, missing, None, None)  # reading it would fail: "does not exist"
