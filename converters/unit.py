"""The deploy unit: the one thing every converter, quantizer and runner agrees on.

It lives in the `converters` leaf (not in `edgevit`) because converters and benchmarks must accept it
without importing model code; `edgevit` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class DeployUnit:
    """A module that `torch.export` accepts with static shapes, plus how to call it.

    `example_inputs` fix every shape; inputs are positional tensors in the order of `input_names`, and the
    module returns a tuple of tensors in the order of `output_names` (a single tensor counts as a 1-tuple).
    """

    name: str
    module: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    # Free-form facts an app needs beside shapes (e.g. "image input is RGB, ImageNet-normalised").
    notes: dict[str, str] = field(default_factory=dict)
    # Inputs that take an RGB image as float 0..255 NCHW (normalisation inside the module): targets with an
    # image type (Core ML) declare them as images, so an app hands over a camera pixel buffer unchanged.
    image_inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.example_inputs) != len(self.input_names):
            raise ValueError(
                f"unit {self.name!r}: {len(self.example_inputs)} example inputs but {len(self.input_names)} input names"
            )
        unknown = set(self.image_inputs) - set(self.input_names)
        if unknown:
            raise ValueError(f"unit {self.name!r}: image inputs {sorted(unknown)} are not among its inputs")

    def run_eager(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Call the module the way every runtime will: positional tensors in, tuple of tensors out."""
        with torch.no_grad():
            out = self.module(*inputs)
        return out if isinstance(out, tuple) else (out,)
