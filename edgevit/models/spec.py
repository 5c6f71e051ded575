"""What an app must know about a model without importing it: size, preprocessing, task."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from torch import nn

from converters.unit import DeployUnit

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    variant: str
    input_size: tuple[int, int]  # (height, width) of the image input
    task: str  # "video-segmentation", "classification", "saliency", ...
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    layout: str = "NCHW, RGB, float32 in [0,1] before normalisation"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class EdgeModel(Protocol):
    """What every registered model offers beyond `nn.Module`."""

    spec: ModelSpec

    def deploy_units(self) -> list[DeployUnit]: ...


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
