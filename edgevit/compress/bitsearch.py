"""Bit widths chosen by measured latency: each layer's real artifact kernel benched at each width on the device,
then the greedy mixed-precision search held to a budget in milliseconds instead of a bytes proxy.

Why measure: a proxy (bytes, BOPs) says 4-bit weights are cheaper, but what a runtime does with them differs per
kernel: XNNPACK packs 4-bit Linear weights but runs 4-bit convs from int8 storage; a GEMM whose activations are
quantized per call pays that whatever the weight width; a small GEMM is bound by call overhead, not weight
bandwidth. The search takes what the device measures (`quant.mixed_precision.allocate` with a latency `Budget`).

How: every planned layer with a weight becomes a probe, a one-layer deploy unit with the layer's own weights
and input shape, quantized at one width with the plan's own qparams and lowered by the target's real quantized
lowering (`converters.quantized.convert_quantized`). Identical layers (DINOv2's twelve qkv projections) share
one probe. All probes, an idle probe (the runtime's call overhead, subtracted from each) and the whole unit at
the highest widths (for the part no bit choice changes) go into one bundle, benched on the device through the
benchmark harness (`benchmarks.devices.open_device(spec).bench`, as `edgevit bench --device` does). Probe times
are cached per device, runtime version, target, shape and width in ~/.cache/edgevit/bit_latency.json. The final
plan's artifact is benched the same way and its measured latency recorded against the budget.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from converters.base import backend_versions
from converters.targets.registry import target_info
from converters.unit import DeployUnit
from edgevit.compress.latency import read_timings, write_timings
from edgevit.errors import EdgevitError
from quant.fake_quant import CalibrationStats
from quant.metrics import SensitivityTable
from quant.plan import LayerQuant, QuantPlan

RUNS = 30
WARMUP = 5
THREADS = 1  # one big core, the phone case (as edgevit.compress.latency)
_IDLE = "idle"


class Probe(nn.Module):
    """One layer alone, called as the model calls it."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class _Idle(nn.Module):
    """The cheapest program a runtime will run: what every probe pays besides its layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1.0


def default_cache() -> Path:
    from edgevit.training.students import default_cache_dir

    return default_cache_dir().parent / "bit_latency.json"


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


def _probe_key(layer: nn.Module, lq: LayerQuant, shape: tuple[int, ...]) -> str:
    q = lq.weight
    assert q is not None
    conv = {k: str(getattr(layer, k)) for k in ("stride", "padding", "dilation", "groups") if hasattr(layer, k)}
    blob = [lq.kind, lq.weight_shape, list(shape), q.bits, q.granularity, q.group_size, conv, layer.bias is not None]
    return json.dumps(blob, sort_keys=True)


class MeasuredCost:
    """`cost(layer) -> ms` for `quant.mixed_precision`: the measured time of the layer's kernel at its width
    (idle overhead subtracted, floored at 0), and `fixed_ms`, the unit's time not set by any layer's bits."""

    def __init__(
        self,
        unit: DeployUnit,
        stats: CalibrationStats,
        table: SensitivityTable,
        target: str,
        device: str,
        cache: Path | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.unit, self.stats, self.target, self.device = unit, stats, target, device
        self.cache = cache or default_cache()
        self.say = progress or (lambda _msg: None)
        weighted = [n for n in stats.layers if stats.layers[n].kind != "matmul"]
        self.shapes = layer_inputs(unit.module, unit, weighted)
        widths = sorted({w for w in table.weight_bits}, reverse=True)
        self.probes: dict[str, tuple[str, LayerQuant]] = {}  # probe key → (layer, its LayerQuant)
        self.keys: dict[tuple[str, int | None], str] = {}
        for name in weighted:
            if name not in self.shapes:
                continue  # not run on the example inputs: costs nothing here
            for w in widths:
                lq = stats.layers[name].layer_quant(w, max(table.act_bits), "probe")
                key = _probe_key(unit.module.get_submodule(name), lq, self.shapes[name])
                self.keys[(name, w)] = key
                self.probes.setdefault(key, (name, lq))
        top = stats.plan(bits={n: (widths[0] if n in weighted else None, max(table.act_bits)) for n in stats.layers})
        self.ms = self._measure(top)
        self.fixed_ms = self.ms["unit"] - sum(self(top.layers[n]) for n in weighted if (n, widths[0]) in self.keys)

    def __call__(self, layer: LayerQuant) -> float:
        if layer.weight is None:
            return 0.0
        key = self.keys.get((layer.name, layer.weight.bits))
        if key is None:
            return 0.0
        return max(0.0, self.ms[key] - self.ms[_IDLE])

    def _cache_key(self, probe: str) -> str:
        blob = {
            "device": self.device,
            "host": platform.node() if self.device == "local" else None,
            "machine": [platform.machine(), os.cpu_count()] if self.device == "local" else None,
            "target": self.target,
            "versions": backend_versions(target_info(self.target).backends),
            "threads": THREADS,
            "runs": RUNS,
            "probe": probe,
        }
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:20]

    def _measure(self, top: QuantPlan) -> dict[str, float]:
        """Median ms of every probe (cached ones read back), the idle probe and the whole unit at `top`."""
        table = read_timings(self.cache)
        ms = {k: table[self._cache_key(k)] for k in (*self.probes, _IDLE) if self._cache_key(k) in table}
        units: list[tuple[DeployUnit, QuantPlan | None]] = []
        names: dict[str, str] = {}
        for i, (key, (name, lq)) in enumerate(self.probes.items()):
            if key in ms:
                continue
            layer = copy.deepcopy(self.unit.module.get_submodule(name))
            x = torch.zeros(self.shapes[name])
            probe = DeployUnit(f"p{i}", Probe(layer).eval(), (x,), ("x",), ("y",))
            units.append((probe, QuantPlan(layers={"layer": dataclasses.replace(lq, name="layer")})))
            names[probe.name] = key
        if _IDLE not in ms:
            units.append((DeployUnit(_IDLE, _Idle().eval(), (torch.zeros(1, 8),), ("x",), ("y",)), None))
            names[_IDLE] = _IDLE
        units.append((dataclasses.replace(self.unit, name="unit"), top))
        names["unit"] = "unit"
        self.say(f"measuring {len(units) - 1} layer kernel(s) on {self.device} ({self.target})")
        measured = bench_units(units, self.target, self.device)
        for unit_name, value in measured.items():
            ms[names[unit_name]] = value
        write_timings(self.cache, {**table, **{self._cache_key(k): v for k, v in ms.items() if k != "unit"}})
        return ms


def bench_units(units: Sequence[tuple[DeployUnit, QuantPlan | None]], target: str, device: str) -> dict[str, float]:
    """Median latency (ms) of each unit lowered for `target` (quantized as its plan says, or float without one),
    benched on `device` through the benchmark harness; EdgevitError naming the unit that failed."""
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
            if plan is None:
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
    with tempfile.TemporaryDirectory(prefix="edgevit-bitsearch-") as folder:
        bundle = Path(folder) / "bundle"
        write(bundle, header, lower)
        settings = BenchSettings(runs=RUNS, warmup=WARMUP, threads=THREADS, targets=(target,))
        results = dev.bench(bundle, settings)
    out = {}
    for row in results["rows"]:
        if row["status"] != "ok":
            raise EdgevitError(
                f"latency probe {row['unit']} on {device} ({target}) {row['status']}: {row.get('reason')}"
            )
        out[row["unit"]] = float(row["latency"]["median_ms"])
    return out


def latency_plan(
    unit: DeployUnit,
    module: nn.Module,
    stats: CalibrationStats,
    table: SensitivityTable,
    budget_ms: float,
    target: str,
    device: str,
    cache: Path | None = None,
) -> QuantPlan:
    """The greedy plan under `budget_ms` measured on `device`, its final artifact benched there; the plan's
    `metadata["latency"]` holds the budget, the predicted and the measured ms."""
    from quant.mixed_precision import allocate, latency_budget

    unit = dataclasses.replace(unit, module=module)
    cost = MeasuredCost(unit, stats, table, target, device, cache)
    plan = allocate(stats, table, [latency_budget(budget_ms, cost, cost.fixed_ms)])
    measured = bench_units([(dataclasses.replace(unit, name="unit"), plan)], target, device)["unit"]
    predicted = plan.metadata["allocation"]["budgets"][0]["used"]
    plan.metadata["latency"] = {
        "budget_ms": budget_ms,
        "device": device,
        "target": target,
        "predicted_ms": predicted,
        "measured_ms": measured,
        "measured_within_budget": measured <= budget_ms,
        "highest_widths_ms": cost.ms["unit"],
        "fixed_ms": cost.fixed_ms,
        "idle_ms": cost.ms[_IDLE],
        "probes": len(cost.probes),
        "how": f"median of {RUNS} runs after {WARMUP} warm-up, {THREADS} thread(s), via the benchmark harness",
    }
    return plan
