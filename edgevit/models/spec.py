"""What an app must know about a model without importing it: size, preprocessing, task, how it is driven."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn

from converters.unit import DeployUnit

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Loop = Literal["single", "video"]
"""How a model's deploy units are driven: "single", one call per image; "video", by the video loop
(`edgevit.video`), which carries memory between frames and chooses among the units' outputs."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    variant: str
    input_size: tuple[int, int]  # (height, width) of the image input
    task: str  # "video-segmentation", "classification", "saliency", ...
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    layout: str = "NCHW, RGB, float32 in [0,1] before normalisation"
    loop: Loop = "single"  # declared by the family, so nothing guesses "is this a video model" from a name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class EdgeModel(Protocol):
    """What every registered model offers beyond `nn.Module`."""

    spec: ModelSpec

    def deploy_units(self) -> list[DeployUnit]: ...


def image_unit(module: nn.Module, size: int, output: str, notes: dict[str, str] | None = None) -> DeployUnit:
    """The one deploy unit of a single-image model (classifier, feature extractor, saliency map)."""
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    spec = module.spec
    image_note = f"1x3x{size}x{size} RGB in [0,1], then (x - {list(spec.mean)}) / {list(spec.std)}"
    return DeployUnit(
        name="model",
        module=module,
        example_inputs=(example,),
        input_names=("image",),
        output_names=(output,),
        notes={"image": image_note, **(notes or {})},
    )


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
