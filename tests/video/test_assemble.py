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


def test_bf16_units_run_in_bfloat16_and_hand_float32_back() -> None:
    """Named units run under bfloat16 autocast (their outputs move off the fp32 ones, float32 to the loop); the
    tracker built so follows the fp32 one's masks; a unit name that does not exist is one error naming the units."""
    from edgevit.data.video import read_frames, sample_video
    from edgevit.video.assemble import eager_tracker, mask_iou
    from edgevit.video.tracker import Prompt

    torch.manual_seed(0)
    model = create("efficienttam_ti", image_size=128, depth=3, memory_attention_layers=2)
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(20.0)  # masks not empty (STACK.md)
    fp32, bf16 = eager_tracker(model), eager_tracker(model, bf16=("image_encoder", "memory_attention"))
    image = torch.rand(1, 3, 128, 128) * 255
    (a,), (b,) = fp32.run["image_encoder"](image), bf16.run["image_encoder"](image)
    assert b.dtype == torch.float32 and not torch.equal(a, b)
    assert torch.allclose(a, b, rtol=0.1, atol=0.1 * float(a.abs().max()))
    mem_inputs = (a, torch.randn(1, 1, 32, 32), torch.tensor([1.0]))  # a unit not named stays float32, bit for bit
    assert torch.equal(fp32.run["memory_encoder"](*mem_inputs)[0], bf16.run["memory_encoder"](*mem_inputs)[0])
    frames = list(read_frames(sample_video("bikes"), 4))
    prompt = Prompt(points=((300.0, 150.0),), labels=(1,))
    ref = list(fp32.track(frames, prompt))
    got = list(bf16.track(frames, prompt))
    assert all(0.01 < r.mask.mean() < 0.99 for r in ref)
    assert min(mask_iou(r.mask, g.mask) for r, g in zip(ref, got, strict=True)) >= 0.9
    with pytest.raises(EdgevitError, match="no unit.*'decoder'.*units: image_encoder"):
        eager_tracker(model, bf16=("decoder",))
