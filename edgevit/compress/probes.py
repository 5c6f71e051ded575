"""The one-layer units the latency search benches (`edgevit.compress.bitsearch`): a planned layer alone with its own
weights and input shape, the idle program whose time every probe pays besides its layer, and the key under which a
probe's time is cached (identical layers — DINOv2's twelve qkv projections — share one).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import torch
from torch import nn

from converters.unit import DeployUnit
from quant.plan import LayerQuant

IDLE = "idle"


class Probe(nn.Module):
    """One layer alone, called as the model calls it."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class Idle(nn.Module):
    """The cheapest program a runtime will run: what every probe pays besides its layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1.0


def layer_inputs(module: nn.Module, unit: DeployUnit, names: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """The input shape each named layer sees when `module` runs the unit's example inputs."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple) -> None:
            shapes.setdefault(name, tuple(args[0].shape))

        return hook

    hooks = [module.get_submodule(name).register_forward_pre_hook(record(name)) for name in names]
    try:
        with torch.no_grad():
            module.eval()(*unit.example_inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def probe_key(layer: nn.Module, lq: LayerQuant, shape: tuple[int, ...]) -> str:
    q = lq.weight
    assert q is not None
    conv = {k: str(getattr(layer, k)) for k in ("stride", "padding", "dilation", "groups") if hasattr(layer, k)}
    blob = [lq.kind, lq.weight_shape, list(shape), q.bits, q.granularity, q.group_size, conv, layer.bias is not None]
    return json.dumps(blob, sort_keys=True)


def probe_input(lq: LayerQuant, shape: tuple[int, ...]) -> torch.Tensor:
    """A probe's example input: uniform over the layer's calibrated input grid. Not zeros: a zero input makes a
    bias-free output exactly zero, which no parity gate can score, and lets a runtime take short cuts."""
    q = lq.inputs[0]
    lo, hi = (q.quant_min - q.zero_point[0]) * q.scale[0], (q.quant_max - q.zero_point[0]) * q.scale[0]
    return lo + (hi - lo) * torch.rand(shape, generator=torch.Generator().manual_seed(0))
