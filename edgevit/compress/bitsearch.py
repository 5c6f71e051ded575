"""Bit widths chosen by measured latency: each layer's real artifact kernel benched at each width on the device,
corrected by whole-unit anchor plans benched beside it, then the greedy mixed-precision search held to a budget in
milliseconds instead of a bytes proxy, with a floor: never slower than the highest widths (W8A8) unless it keeps
layers float within the budget.

Float is a width too (`quant.mixed_precision.FLOAT`: the layer left out of the plan, no quantization noise). On
XNNPACK every 4-bit layer group measured slower than 8-bit on DINOv2-S (stop 18), so a search over 4 and 8 bits
ends at W8A8 whenever W8A8 meets the budget, and the room a bytes-proxy plan's latency leaves goes unused; keeping
the most sensitive layers float spends it on SQNR. Each distinct layer shape gets a float probe, and the anchors
include each group of identical layers left float and every layer float.

Why measure: a proxy (bytes, BOPs) says 4-bit weights are cheaper, but what a runtime does with them differs per
kernel: XNNPACK packs 4-bit Linear weights but runs 4-bit convs from int8 storage; a GEMM whose activations are
quantized per call pays that whatever the weight width; a small GEMM is bound by call overhead, not weight
bandwidth. The search takes what the device measures (`quant.mixed_precision.allocate` with a latency `Budget`).

How: every planned layer with a weight becomes a probe, a one-layer deploy unit with the layer's own weights
and input shape, quantized at one width with the plan's own qparams and lowered by the target's real quantized
lowering (`converters.quantized.convert_quantized`). Identical layers (DINOv2's twelve qkv projections) share
one probe. All probes, an idle probe (the runtime's call overhead, subtracted from each) and whole-unit anchor
plans (`MeasuredCost` says which and why) go into one bundle, benched on the device through the benchmark harness
(`benchmarks.devices.open_device(spec).bench`, as `edgevit bench --device` does). Probe times are cached per
device, runtime version, target, shape and width in ~/.cache/edgevit/bit_latency.json; anchors are benched every
time (they are the unit itself). The final plan's artifact is benched beside the highest-width plan, and the
faster is kept (`floor_reason`); budget, predicted and measured ms are recorded in the plan's metadata.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import platform
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from converters.base import backend_versions
from converters.targets.registry import target_info
from converters.unit import DeployUnit
from edgevit.compress.latency import read_timings, write_timings
from edgevit.compress.latency_fit import Anchor, fit_costs
from edgevit.compress.probes import (
    IDLE,
    RUNS,
    THREADS,
    Idle,
    Probe,
    bench_units,
    float_key,
    layer_inputs,
    probe_input,
    probe_key,
)
from quant.fake_quant import CalibrationStats
from quant.metrics import SensitivityTable
from quant.mixed_precision import FLOAT
from quant.plan import LayerQuant, QuantPlan

MAX_FLIPS = 12  # group-flip anchors benched at most (each is a whole-unit lowering)
TOP = "highest widths"
FLOATING = FLOAT[0]  # the width key of a layer left float


def default_cache() -> Path:
    from edgevit.training.students import default_cache_dir

    return default_cache_dir().parent / "bit_latency.json"


class MeasuredCost:
    """`cost(layer) -> ms` for `quant.mixed_precision`: the time a layer at its width adds to the whole unit,
    and `fixed_ms`, the unit's time no layer's bits set.

    Why anchors: a one-layer probe times the kernel alone, with the runtime's boundary around it (the input's
    quantize, the output's dequantize, a delegate call); in the unit those are fused, shared or different (a
    4-bit GEMM adds a dynamic per-token quantize of its input where a static int8 GEMM reuses its neighbour's
    grid). Stop 17 measured the gap on DINOv2-S on XNNPACK: the probes said 4-bit qkv/fc1/fc2 were faster than
    8-bit and predicted 74 ms for a plan whose artifact took 124, while W8A8 took 113. So the same bundle benches
    whole-unit anchor plans beside the probes: every layer at its highest width, every layer at its lowest, and
    — when there are at most `MAX_FLIPS` — each group of identical layers alone flipped to each narrower width.
    Group flips are the choice because they measure what the search trades in — the unit's change when a group
    changes width — in context. A per-width scale + offset on the probes was the other candidate, but it keeps
    each layer's change in proportion to its probes, and the probes' errors are not proportional: on the tiny
    ViT on XNNPACK fc1 at 4 bits added 0.076 ms to the unit where its probes said −0.002, proj 0.017 for −0.010.
    `fit_costs` makes the costs reproduce the anchors; the all-lowest anchor checks that the flips add up (least
    squares shares what they do not). Each anchor's measured, bare-probe and fitted ms go into `record()`."""

    def __init__(
        self,
        unit: DeployUnit,
        stats: CalibrationStats,
        table: SensitivityTable,
        target: str,
        device: str,
        cache: Path | None = None,
        progress: Callable[[str], None] | None = None,
        timings: Callable[[MeasuredCost], dict[str, float]] | None = None,
        floats: bool = True,
    ) -> None:
        """`timings` (default: bench on `device`) returns the median ms of every probe key, "idle" and every
        anchor plan (`self.plans`); given numbers make the fit and the search testable without a runtime.
        `floats` adds float as a width (a float probe per layer shape, float anchors)."""
        self.unit, self.stats, self.target, self.device = unit, stats, target, device
        self.floats = floats
        self.cache = cache or default_cache()
        self.say = progress or (lambda _msg: None)
        weighted = [n for n in stats.layers if stats.layers[n].kind != "matmul"]
        self.shapes = layer_inputs(unit.module, unit, weighted)
        self.widths = sorted(set(table.weight_bits), reverse=True)
        self.act = max(table.act_bits)
        # probe key → (layer, its LayerQuant at that width; a float probe holds the top width's, for its input)
        self.probes: dict[str, tuple[str, LayerQuant, bool]] = {}
        self.keys: dict[tuple[str, int | None], str] = {}
        for name in weighted:
            if name not in self.shapes:
                continue  # not run on the example inputs: costs nothing here
            layer = unit.module.get_submodule(name)
            for w in self.widths:
                lq = stats.layers[name].layer_quant(w, self.act, "probe")
                key = probe_key(layer, lq, self.shapes[name])
                self.keys[(name, w)] = key
                self.probes.setdefault(key, (name, lq, False))
            if floats:
                key = float_key(layer, stats.layers[name].kind, self.shapes[name])
                self.keys[(name, FLOATING)] = key
                top = stats.layers[name].layer_quant(self.widths[0], self.act, "probe")
                self.probes.setdefault(key, (name, top, True))
        self.plans = self._anchor_plans()
        self.top = self.plans[TOP]
        self.ms = (timings or MeasuredCost._measure)(self)
        self.top_ms = self.ms[TOP]
        self.isolated = {key: max(0.0, self.ms[key] - self.ms[IDLE]) for key in self.probes}
        self.anchors = [Anchor(name, self.counts(plan), self.ms[name]) for name, plan in self.plans.items()]
        self.costs, self.fixed_ms = fit_costs(self.isolated, self.anchors)

    def __call__(self, layer: LayerQuant) -> float:
        if layer.weight is None:
            return 0.0
        key = self.keys.get((layer.name, layer.weight.bits))
        return 0.0 if key is None else self.costs[key]

    def float_cost(self, name: str) -> float | None:
        """The ms layer `name` adds to the unit left float (None: not probed float, so not a candidate)."""
        key = self.keys.get((name, FLOATING))
        return None if key is None else self.costs[key]

    def budget_float_cost(self) -> Callable[[str], float | None] | None:
        """What a latency `Budget` prices float with: None when floats were not probed (float not a candidate)."""
        return self.float_cost if self.floats else None

    def widths_of(self, plan: QuantPlan) -> dict[str, int]:
        """Each probed layer's width in `plan`: its weight bits, or `FLOATING` when the plan leaves it out."""
        out = {}
        for name, _ in self.keys:
            lq = plan.layers.get(name)
            if lq is not None and lq.weight_bits is not None:
                out[name] = lq.weight_bits
            elif lq is None and self.floats:
                out[name] = FLOATING
        return out

    def floated(self, plan: QuantPlan) -> list[str]:
        """The probed layers `plan` keeps float."""
        return [name for name, w in self.widths_of(plan).items() if w == FLOATING]

    def counts(self, plan: QuantPlan) -> dict[str, int]:
        """How many of the plan's layers sit at each probe key (a layer the plan leaves out at its float key)."""
        out: dict[str, int] = {}
        for name, w in self.widths_of(plan).items():
            key = self.keys.get((name, w))
            if key is not None:
                out[key] = out.get(key, 0) + 1
        return out

    def predict(self, plan: QuantPlan, *, bare: bool = False) -> float:
        """The plan's whole-unit ms as the fitted costs (or, `bare`, the isolated probes: stop 17's model) say."""
        counts = self.counts(plan)
        if bare:
            top = self.anchors[0]
            fixed = top.measured_ms - sum(n * self.isolated[k] for k, n in top.counts.items())
            return fixed + sum(n * self.isolated[k] for k, n in counts.items())
        return self.fixed_ms + sum(n * self.costs[k] for k, n in counts.items())

    def record(self) -> dict[str, Any]:
        """The anchors (measured, bare-probe and fitted ms), for a plan's metadata."""
        anchors = [
            {
                "plan": a.name,
                "measured_ms": a.measured_ms,
                "bare_probes_ms": self.predict(self.plans[a.name], bare=True),
                "fitted_ms": self.predict(self.plans[a.name]),
            }
            for a in self.anchors
        ]
        return {
            "anchors": anchors,
            "highest_widths_ms": self.top_ms,
            "fixed_ms": self.fixed_ms,
            "idle_ms": self.ms[IDLE],
            "probes": len(self.probes),
        }

    def _groups(self) -> list[list[str]]:
        """Layers whose probes are the same at every width (DINOv2's twelve qkv projections) form one group."""
        by: dict[tuple[str, ...], list[str]] = {}
        for name in dict.fromkeys(n for n, _ in self.keys):
            by.setdefault(tuple(self.keys[(name, w)] for w in self._others()), []).append(name)
        return list(by.values())

    def _others(self) -> list[int]:
        """Every width a layer can take: the integer ones, highest first, then float when it is a candidate."""
        return [*self.widths, FLOATING] if self.floats else list(self.widths)

    def _plan(self, bits: Mapping[str, int]) -> QuantPlan:
        """Every weighted layer at the highest width except those `bits` names (left out at `FLOATING`)."""
        top = self.widths[0]
        widths = {n: (bits.get(n, top) if s.kind != "matmul" else None, self.act) for n, s in self.stats.layers.items()}
        plan = self.stats.plan(bits={n: c for n, c in widths.items() if c[0] != FLOATING})
        plan.layers = {n: lq for n, lq in plan.layers.items() if widths[n][0] != FLOATING}
        return plan

    def _anchor_plans(self) -> dict[str, QuantPlan]:
        """The whole-unit plans benched with the probes, the highest widths first (`fit_costs` anchors on it):
        every layer at each other width, then — when there are at most `MAX_FLIPS` — each group of identical
        layers alone at each other width (float included: "×12 float" is the unit with those layers left out)."""
        plans = {TOP: self._plan({})}
        others = self._others()[1:]
        lowest = [self.widths[-1]] if len(self.widths) > 1 else []
        for w in lowest + ([FLOATING] if self.floats else []):
            plans[f"all {_width(w)}"] = self._plan({n: w for n, _ in self.keys})
        groups = self._groups()
        if 1 < len(groups) and len(groups) * len(others) <= MAX_FLIPS:
            for group in groups:
                for w in others:
                    plans[f"{group[0]} ×{len(group)} at {_width(w)}"] = self._plan(dict.fromkeys(group, w))
        return plans

    def _cache_key(self, probe: str) -> str:
        blob = {
            "device": self.device,
            "host": platform.node() if self.device == "local" else None,
            "machine": [platform.machine(), os.cpu_count()] if self.device == "local" else None,
            "target": self.target,
            "versions": backend_versions(target_info(self.target).backends),
            "threads": THREADS,
            "runs": RUNS,
            "input": "uniform over the input grid",  # zeros before stop 18
            "probe": probe,
        }
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:20]

    def _measure(self) -> dict[str, float]:
        """Median ms of every probe (cached ones read back), the idle probe and every anchor plan."""
        table = read_timings(self.cache)
        ms = {k: table[self._cache_key(k)] for k in (*self.probes, IDLE) if self._cache_key(k) in table}
        units: list[tuple[DeployUnit, QuantPlan | None]] = []
        names: dict[str, str] = {}
        for i, (key, (name, lq, floating)) in enumerate(self.probes.items()):
            if key in ms:
                continue
            layer = copy.deepcopy(self.unit.module.get_submodule(name))
            x = probe_input(lq, self.shapes[name])
            probe = DeployUnit(f"p{i}", Probe(layer).eval(), (x,), ("x",), ("y",))
            plan = None if floating else QuantPlan(layers={"layer": dataclasses.replace(lq, name="layer")})
            units.append((probe, plan))
            names[probe.name] = key
        if IDLE not in ms:
            units.append((DeployUnit(IDLE, Idle().eval(), (torch.zeros(1, 8),), ("x",), ("y",)), None))
            names[IDLE] = IDLE
        for i, (label, plan) in enumerate(self.plans.items()):
            units.append((dataclasses.replace(self.unit, name=f"anchor{i}"), plan))
            names[f"anchor{i}"] = label
        self.say(
            f"measuring {len(names) - len(self.plans)} layer kernel(s) and {len(self.plans)} whole-unit anchor(s) "
            f"on {self.device} ({self.target})"
        )
        measured = bench_units(units, self.target, self.device)
        for unit_name, value in measured.items():
            ms[names[unit_name]] = value
        fresh = {self._cache_key(k): v for k, v in ms.items() if k in self.probes or k == IDLE}
        write_timings(self.cache, {**table, **fresh})
        return ms


def _width(w: int) -> str:
    return "float" if w == FLOATING else f"W{w}"
