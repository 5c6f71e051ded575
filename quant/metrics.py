"""How far a quantized model is from its float self: SQNR, top-1 agreement, per-layer sensitivity.

SQNR is the figure every rung of the verification ladder uses (artifact vs eager), so quantization is
judged in the same unit as conversion. Sensitivity is measured on the model output, not the layer output:
a layer whose error the rest of the network amplifies must count as more sensitive.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from rich.progress import track
from torch import Tensor, nn

from quant.fake_quant import Batch, CalibrationStats, apply_plan, run_batch, strip_fake_quant
from quant.plan import LayerKind, QuantPlan


def sqnr(reference: Tensor, test: Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when identical), accumulated in float64."""
    ref = reference.detach().to(torch.float64)
    noise = (ref - test.detach().to(torch.float64)).pow(2).sum().item()
    signal = ref.pow(2).sum().item()
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def top1_agreement(reference_logits: Tensor, test_logits: Tensor) -> float:
    """Fraction of samples whose arg-max class is unchanged (task fidelity without labels)."""
    return (reference_logits.argmax(dim=-1) == test_logits.argmax(dim=-1)).double().mean().item()


def flatten_output(out: Tensor | tuple | list | dict) -> list[Tensor]:
    """Every tensor of a model output (nested tuples, lists and dicts), in order."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in flatten_output(v)]
    return [t for v in out for t in flatten_output(v)]


@torch.no_grad()
def model_outputs(model: nn.Module, batches: Iterable[Batch]) -> list[Tensor]:
    """Every output tensor of every batch, in order (nested outputs flattened)."""
    was_training = model.training
    model.eval()
    try:
        return [t for batch in batches for t in flatten_output(run_batch(model, batch))]
    finally:
        model.train(was_training)


def outputs_sqnr(reference: Sequence[Tensor], test: Sequence[Tensor]) -> float:
    """SQNR over all outputs at once, so one near-silent output cannot dominate."""
    return sqnr(torch.cat([t.reshape(-1) for t in reference]), torch.cat([t.reshape(-1) for t in test]))


@dataclass
class SensitivityTable:
    """Output SQNR (dB) with only one layer quantized, per layer and per (weight_bits, act_bits)."""

    kinds: dict[str, LayerKind]
    weight_numel: dict[str, int]
    input_numel: dict[str, int]
    weight_bits: tuple[int, ...]
    act_bits: tuple[int, ...]
    sqnr_db: dict[str, dict[tuple[int | None, int], float]]

    @property
    def layers(self) -> list[str]:
        return list(self.sqnr_db)

    def choices(self, name: str) -> list[tuple[int | None, int]]:
        """The (weight_bits, act_bits) measured for `name` (weight bits None for weightless matmuls)."""
        return list(self.sqnr_db[name])

    def noise(self, name: str, weight_bits: int | None, act_bits: int) -> float:
        """Relative output noise power 10^(-SQNR/10): additive across layers, unlike dB."""
        return 10.0 ** (-self.sqnr_db[name][(weight_bits, act_bits)] / 10.0)


@torch.no_grad()
def layer_sensitivity(
    model: nn.Module,
    stats: CalibrationStats,
    batches: Sequence[Batch],
    weight_bits: Sequence[int] = (4, 6, 8),
    act_bits: Sequence[int] = (8,),
    progress: bool = True,
) -> SensitivityTable:
    """Quantize one layer at a time at each candidate bit pair and measure the model-output SQNR."""
    reference = model_outputs(model, batches)
    weight_bits, act_bits = tuple(sorted(set(weight_bits))), tuple(sorted(set(act_bits)))
    table: dict[str, dict[tuple[int | None, int], float]] = {}
    for name in track(list(stats.layers), description="sensitivity", transient=True, disable=not progress):
        layer = stats.layers[name]
        w_choices: tuple[int | None, ...] = (None,) if layer.kind == "matmul" else weight_bits
        table[name] = {}
        for w in w_choices:
            for a in act_bits:
                probe = QuantPlan(layers={name: layer.layer_quant(w, a, "probe")})
                apply_plan(model, probe, inplace=True)
                try:
                    table[name][(w, a)] = outputs_sqnr(reference, model_outputs(model, batches))
                finally:
                    strip_fake_quant(model)
    return SensitivityTable(
        kinds={n: s.kind for n, s in stats.layers.items()},
        weight_numel={n: math.prod(s.weight_shape) if s.weight_shape else 0 for n, s in stats.layers.items()},
        input_numel={n: s.input_numel for n, s in stats.layers.items()},
        weight_bits=weight_bits,
        act_bits=act_bits,
        sqnr_db=table,
    )
