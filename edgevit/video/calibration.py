"""What each EfficientTAM deploy unit sees while it tracks: the calibration data of a quantizer.

Only the image encoder takes an image. The memory attention takes a memory bank, the decoder prompt slots
and conditioned features, the memory encoder a mask: tensors whose ranges exist only inside the video loop.
Running the eager tracker over real frames and keeping every unit call's inputs gives each unit the
distribution it meets in deployment, including the empty-bank call of the prompted frame and the filling
bank after it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from edgevit.video.tracker import UNIT_NAMES, Prompt, Tracker

UnitInputs = dict[str, list[tuple[torch.Tensor, ...]]]


def centre_click(frame: np.ndarray) -> Prompt:
    """One positive click at the frame's centre: where the subject of most clips is, when no prompt is given."""
    height, width = frame.shape[:2]
    return Prompt(points=((width / 2.0, height / 2.0),), labels=(1,))


def record_unit_inputs(model: nn.Module, frames: Iterable[np.ndarray], prompt: Prompt | None = None) -> UnitInputs:
    """Track `frames` with the eager units of `model`; return every unit call's inputs, in call order.

    Frames are consumed one at a time (a generator is never held whole); without a prompt the first frame's
    centre is clicked. No frames record nothing. The tracker needs no frame count: tracking forward from
    frame 0, the official cap of object pointers at the video's length never binds before the frames run out.
    """
    units = {u.name: u for u in model.deploy_units()}
    seen: UnitInputs = {name: [] for name in UNIT_NAMES}

    def recorder(name: str) -> Callable[..., tuple[torch.Tensor, ...]]:
        def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            seen[name].append(tuple(x.detach().clone() for x in inputs))
            return units[name].run_eager(*inputs)

        return run

    stream = iter(frames)
    first = next(stream, None)
    if first is None:
        return seen
    tracker = Tracker(model.cfg, {name: recorder(name) for name in UNIT_NAMES})
    for _ in tracker.track(itertools.chain([first], stream), prompt or centre_click(first)):
        pass
    return seen
