"""The one-layer units the latency search benches (`edgevit.compress.bitsearch`): a planned layer alone with its own
weights and input shape (quantized at a width, or float), the idle program whose time every probe pays besides its
layer, the key under which a probe's time is cached (identical layers — DINOv2's twelve qkv projections — share
one), and `bench_units`, which lowers and benches probes and whole-unit plans in one bundle.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from converters.unit import DeployUnit
from edgevit.errors import EdgevitError
from quant.plan import LayerQuant, QuantPlan

IDLE = "idle"
RUNS = 30
ROUNDS = 3  # the bundle is benched in rounds, the median of their medians kept: load drift hits every unit alike
WARMUP = 5
THREADS = 1  # one big core, the phone case (as edgevit.compress.latency)


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
    blob = [lq.kind, lq.weight_shape, list(shape), q.bits, q.granularity, q.group_size, _conv(layer), _bias(layer)]
    return json.dumps(blob, sort_keys=True)


def float_key(layer: nn.Module, kind: str, shape: tuple[int, ...]) -> str:
    """The key of a layer's float probe (the layer left out of the plan): its shapes, not its weights, set it."""
    blob = [kind, list(layer.weight.shape), list(shape), "float", None, None, _conv(layer), _bias(layer)]
    return json.dumps(blob, sort_keys=True)


def _conv(layer: nn.Module) -> dict[str, str]:
    return {k: str(getattr(layer, k)) for k in ("stride", "padding", "dilation", "groups") if hasattr(layer, k)}


def _bias(layer: nn.Module) -> bool:
    return getattr(layer, "bias", None) is not None


def probe_input(lq: LayerQuant, shape: tuple[int, ...]) -> torch.Tensor:
    """A probe's example input: uniform over the layer's calibrated input grid (the float probe too, so it sees
    the same values). Not zeros: a zero input makes a bias-free output exactly zero, which no parity gate can
    score, and lets a runtime take short cuts."""
    q = lq.inputs[0]
    lo, hi = (q.quant_min - q.zero_point[0]) * q.scale[0], (q.quant_max - q.zero_point[0]) * q.scale[0]
    return lo + (hi - lo) * torch.rand(shape, generator=torch.Generator().manual_seed(0))


def bench_units(units: Sequence[tuple[DeployUnit, QuantPlan | None]], target: str, device: str) -> dict[str, float]:
    """Median latency (ms) of each unit lowered for `target` (quantized as its plan says; float without a plan or
    with one that keeps every layer float), benched on `device` through the benchmark harness in `ROUNDS`
    interleaved rounds (each unit's figure is the median of its round medians, so a load change during the run
    lands on every unit rather than on the last ones); EdgevitError naming the unit that failed."""
    from benchmarks.bench import BenchSettings
    from benchmarks.devices import DeviceError, open_device
    from converters.bundle import Header, ModelInfo, UnitInfo, Weights
    from converters.bundle import write_bundle as write
    from converters.quantized import convert_quantized
    from converters.targets.registry import target_info

    info = target_info(target)
    precision = info.default_precision

    def lower(folder: Path):
        from converters import convert

        for unit, plan in units:
            if plan is None or not plan.layers:
                yield convert(unit, target, precision, folder / target)
            else:
                yield convert_quantized(unit, target, plan, folder / target)

    images = (
        (int(x.shape[-2]), int(x.shape[-1]))
        for u, _ in units
        for name, x in zip(u.input_names, u.example_inputs, strict=True)
        if name == "image" or name in u.image_inputs
    )
    size = next(images, (1, 1))  # a unit's image input fixes the manifest's input_size
    model = ModelInfo("bitsearch", "probes", size, "probe", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "any", None)
    header = Header(model, Weights("random", None), tuple(UnitInfo.from_unit(u) for u, _ in units))
    try:
        dev = open_device(device)
        dev.check()
    except DeviceError as exc:
        raise EdgevitError(f"--device {device}: {exc}") from None
    rounds: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="edgevit-bitsearch-") as folder:
        bundle = Path(folder) / "bundle"
        write(bundle, header, lower)
        settings = BenchSettings(runs=RUNS // ROUNDS, warmup=WARMUP, threads=THREADS, targets=(target,))
        for _ in range(ROUNDS):
            for row in dev.bench(bundle, settings)["rows"]:
                if row["status"] != "ok":
                    raise EdgevitError(
                        f"latency probe {row['unit']} on {device} ({target}) {row['status']}: {row.get('reason')}"
                    )
                rounds.setdefault(row["unit"], []).append(float(row["latency"]["median_ms"]))
    return {unit: statistics.median(ms) for unit, ms in rounds.items()}
