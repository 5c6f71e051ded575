"""Fake-quant simulation of a whole model: calibrate, plan, apply the plan.

The passes, each with one job:
- `quantizable_layers(model)`: which ops get quantized (nn.Linear, nn.Conv2d, and `MatMul` modules, the
  way a model exposes the Q·Kᵀ and attn·V products; `F.scaled_dot_product_attention` stays float);
- `collect_stats(model, batches)`: one calibration pass filling observers (bit-width independent);
- `CalibrationStats.plan(...)` / `calibrate(...)`: observers → a `QuantPlan` at chosen bits;
- `apply_plan(model, plan)`: a copy whose planned layers quantize exactly as the plan says;
- `strip_fake_quant(model)`: undo `apply_plan(..., inplace=True)` (sensitivity probes).

Only the *inputs* of those ops and their weights are quantized (weights per-channel symmetric, inputs
per-tensor asymmetric by default, which is what XNNPACK and ORT run), and the outputs of convs that
`quantizes_output` names: Softmax, LayerNorm, GELU and residual adds stay float, as MatMul/Conv-only QDQ
does on the targets.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from rich.progress import track
from torch import Tensor, nn

from quant.errors import QuantError
from quant.groupwise import ScaleMethod, fake_quantize_weight, groupwise_qparams
from quant.layer_ops import layer_forward, layer_inputs, layer_kind, quantizes_output
from quant.observers import Observer, ObserverFactory, activation_range, fake_quantize, make_observer, quant_range
from quant.plan import LayerKind, LayerQuant, QuantPlan, TensorQParams

Batch = Tensor | Sequence[Tensor]


def quantizable_layers(model: nn.Module) -> dict[str, LayerKind]:
    """Names and kinds of the ops fake-quant can handle, refusing layers it would silently miss."""
    found: dict[str, LayerKind] = {}
    for name, module in model.named_modules():
        if isinstance(module, FakeQuantLayer):
            raise QuantError(f"layer {name!r} is already fake-quantized: calibrate the float model")
        if isinstance(module, nn.MultiheadAttention):
            raise QuantError(
                f"layer {name!r} is nn.MultiheadAttention, which uses its projection weights without calling "
                "them, so they cannot be observed or fake-quantized: write it with nn.Linear and MatMul"
            )
        kind = layer_kind(module)
        if kind is not None:
            found[name] = kind
    return found


def run_batch(model: nn.Module, batch: Batch) -> Tensor | tuple | dict:
    """Call `model` on a batch given as a tensor or a sequence of positional tensors."""
    return model(batch) if isinstance(batch, Tensor) else model(*batch)


def materialize_batches(batches: Iterable[Batch], min_batches: int, purpose: str) -> list[Batch]:
    """Read every batch up front so a too-small calibration set fails before any work is done."""
    seen = list(batches)
    if len(seen) < min_batches:
        raise QuantError(
            f"{purpose} got {len(seen)} batch(es) but needs at least {min_batches}: pass more batches "
            f"(or lower min_batches)"
        )
    return seen


def _qparams(observer: Observer, bits: int, activation: bool = False) -> TensorQParams:
    scale, zero_point = observer.qparams(bits)
    qmin, qmax = activation_range(bits) if activation else quant_range(bits, observer.symmetric)
    return TensorQParams(
        bits=bits,
        symmetric=observer.symmetric,
        granularity="per_tensor" if observer.ch_axis is None else "per_channel",
        scale=[float(s) for s in scale],
        zero_point=[int(z) for z in zero_point],
        quant_min=qmin,
        quant_max=qmax,
        observer=observer.label,
        ch_axis=observer.ch_axis,
    )


@dataclass
class LayerStats:
    """Calibration statistics of one layer; answers qparams at any bit-width."""

    name: str
    kind: LayerKind
    module: nn.Module
    inputs: list[Observer]
    input_numel: int
    weight_observer: Observer | None = None
    output: Observer | None = None  # the convs `quantizes_output` names
    input_sq: Tensor | None = None  # Linear only: sum over calibration tokens of x_j², per input column
    input_rows: int = 0
    group_sizes: dict[int, int] = field(default_factory=dict)  # weight bits → group size (see use_groups)
    group_method: ScaleMethod = "mse"

    @property
    def weight_shape(self) -> list[int]:
        return list(self.module.weight.shape) if self.kind != "matmul" else []

    def importance(self) -> Tensor | None:
        """E[x_j²] per input column over calibration (the diagonal of the input Hessian), Linear layers only."""
        return None if self.input_sq is None or not self.input_rows else self.input_sq / self.input_rows

    def group_size_for(self, weight_bits: int) -> int | None:
        """The group size a `weight_bits` weight of this layer gets, None for per-channel (no groups asked, not a
        Linear, or its input width does not divide into groups)."""
        size = self.group_sizes.get(weight_bits)
        if size is None or self.kind != "linear" or self.module.weight.shape[1] % size:
            return None
        return size

    def layer_quant(self, weight_bits: int | None, act_bits: int, method: str) -> LayerQuant:
        weight = None
        if self.weight_observer is not None and weight_bits is not None:
            size = self.group_size_for(weight_bits)
            if size is None:
                weight = _qparams(self.weight_observer, weight_bits)
            else:
                weight = groupwise_qparams(
                    self.module.weight, weight_bits, size, self.group_method, importance=self.importance()
                )
        return LayerQuant(
            name=self.name,
            kind=self.kind,
            method=method,
            weight=weight,
            inputs=[_qparams(obs, act_bits, activation=True) for obs in self.inputs],
            weight_shape=self.weight_shape if weight is not None else [],
            output=_qparams(self.output, act_bits, activation=True) if self.output is not None else None,
        )


@dataclass
class CalibrationStats:
    """What one calibration pass learned about every quantizable layer, in execution order."""

    layers: dict[str, LayerStats]
    num_batches: int
    not_executed: list[str] = field(default_factory=list)

    def use_groups(self, group_sizes: Mapping[int, int], method: ScaleMethod = "mse") -> CalibrationStats:
        """From now on, Linear weights planned at a width in `group_sizes` (e.g. {4: 32}) get per-group symmetric
        scales (`quant.groupwise`, `method` "mse" weighted by each column's E[x²], or "minmax") instead of
        per-channel min-max; every plan and sensitivity probe built from these stats follows. Returns self."""
        for stats in self.layers.values():
            stats.group_sizes = dict(group_sizes)
            stats.group_method = method
        return self

    def plan(
        self,
        weight_bits: int = 8,
        act_bits: int = 8,
        bits: Mapping[str, tuple[int | None, int]] | None = None,
        method: str = "ptq",
    ) -> QuantPlan:
        """A plan at uniform bits, with per-layer (weight_bits, act_bits) overrides from `bits`."""
        bits = dict(bits or {})
        unknown = [name for name in bits if name not in self.layers]
        if unknown:
            raise QuantError(f"bit-width given for {unknown[0]!r}, which calibration did not see")
        layers = {}
        for name, stats in self.layers.items():
            w, a = bits.get(name, (weight_bits, act_bits))
            layers[name] = stats.layer_quant(w, a, method)
        first = next(iter(self.layers.values()), None)
        metadata = {
            "calibration_batches": self.num_batches,
            "observer": first.inputs[0].label if first else None,
            "weight_observer": next((s.weight_observer.label for s in self.layers.values() if s.weight_observer), None),
            "not_executed": self.not_executed,
        }
        return QuantPlan(layers=layers, metadata=metadata)


@torch.no_grad()
def collect_stats(
    model: nn.Module,
    batches: Iterable[Batch],
    observer: str | ObserverFactory = "minmax",
    *,
    weight_observer: str | ObserverFactory = "minmax",
    act_symmetric: bool = False,
    min_batches: int = 4,
    layers: Iterable[str] | None = None,
    progress: bool = True,
) -> CalibrationStats:
    """Run calibration batches through `model`, observing every quantizable layer's inputs.

    Weights are observed per output channel (axis 0), symmetric; activations per-tensor, the only
    activation granularity XNNPACK and ORT kernels accept.
    """
    batches = materialize_batches(batches, min_batches, "calibration")
    candidates = quantizable_layers(model)
    if layers is not None:
        wanted = list(layers)
        for name in wanted:
            if name not in candidates:
                kind = type(model.get_submodule(name)).__name__ if _has_submodule(model, name) else None
                raise QuantError(
                    f"layer {name!r} cannot be quantized: it is {kind}, not nn.Linear, nn.Conv2d or MatMul"
                    if kind
                    else f"layer {name!r} does not exist in the model"
                )
        candidates = {name: candidates[name] for name in wanted}

    seen: dict[str, LayerStats] = {}

    def make_hook(name: str, kind: LayerKind):
        def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            if not args:
                raise QuantError(f"layer {name!r} was called with keyword inputs; pass them positionally")
            inputs = layer_inputs(module, args)
            if name not in seen:
                seen[name] = LayerStats(
                    name=name,
                    kind=kind,
                    module=module,
                    inputs=[make_observer(observer, act_symmetric, None) for _ in inputs],
                    input_numel=sum(t[0].numel() for t in inputs),
                )
            for obs, t in zip(seen[name].inputs, inputs, strict=True):
                obs.update(t)
            if kind == "linear":  # column energies for output-aware group scales (quant.groupwise)
                flat = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).to(torch.float32)
                sq = flat.pow(2).sum(dim=0)
                stats = seen[name]
                stats.input_sq = sq if stats.input_sq is None else stats.input_sq + sq
                stats.input_rows += flat.shape[0]

        return hook

    def make_output_hook(name: str):
        def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            stats = seen[name]
            if stats.output is None:
                stats.output = make_observer(observer, act_symmetric, None)
            stats.output.update(output)

        return hook

    handles = [
        model.get_submodule(name).register_forward_pre_hook(make_hook(name, kind)) for name, kind in candidates.items()
    ]
    handles += [
        model.get_submodule(name).register_forward_hook(make_output_hook(name))
        for name in candidates
        if quantizes_output(model.get_submodule(name))
    ]
    was_training = model.training
    model.eval()
    try:
        for batch in track(batches, description="calibrating", transient=True, disable=not progress):
            run_batch(model, batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    for stats in seen.values():
        if stats.kind != "matmul":
            stats.weight_observer = make_observer(weight_observer, True, 0, keep_all=True)
            stats.weight_observer.update(stats.module.weight)
    return CalibrationStats(
        layers=seen, num_batches=len(batches), not_executed=[n for n in candidates if n not in seen]
    )


def calibrate(
    model: nn.Module,
    batches: Iterable[Batch],
    observer: str | ObserverFactory = "minmax",
    *,
    weight_observer: str | ObserverFactory = "minmax",
    weight_bits: int = 8,
    act_bits: int = 8,
    min_batches: int = 4,
    progress: bool = True,
) -> QuantPlan:
    """Uniform PTQ in one call: observe `batches`, return the plan at `weight_bits`/`act_bits`."""
    stats = collect_stats(
        model, batches, observer, weight_observer=weight_observer, min_batches=min_batches, progress=progress
    )
    return stats.plan(weight_bits, act_bits)


def _has_submodule(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


class FakeQuantize(nn.Module):
    """Fixed-qparams quantize→dequantize of one tensor (no observing: the plan already decided)."""

    def __init__(self, q: TensorQParams) -> None:
        super().__init__()
        scale, zero_point = q.tensors()
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zero_point)
        self.quant_min, self.quant_max, self.ch_axis = q.quant_min, q.quant_max, q.ch_axis

    def forward(self, x: Tensor) -> Tensor:
        return fake_quantize(x, self.scale, self.zero_point, self.quant_min, self.quant_max, self.ch_axis)


class FakeQuantLayer(nn.Module):
    """A planned layer: fake-quantized inputs and a pre-quantized weight around the original module."""

    def __init__(self, inner: nn.Module, layer: LayerQuant) -> None:
        super().__init__()
        self.inner = inner
        self.kind = layer.kind
        self.input_quant = nn.ModuleList(FakeQuantize(q) for q in layer.inputs)
        if layer.weight is not None:
            weight_q = fake_quantize_weight(inner.weight.detach(), layer.weight)
        else:
            weight_q = inner.weight.detach() if self.kind != "matmul" else None
        self.register_buffer("weight_q", weight_q)
        # An int8-output conv holds its bias as int32 on the accumulator's grid (input scale x weight scale): the
        # integer kernel adds it before rounding the output, so a float bias would move outputs across levels.
        self.output_quant = FakeQuantize(layer.output) if layer.output is not None else None
        self.register_buffer("bias_q", accumulator_bias(inner, layer) if layer.output is not None else None)

    def forward(self, *args: Tensor) -> Tensor:
        inputs = [fq(t) for fq, t in zip(self.input_quant, layer_inputs(self.inner, args), strict=True)]
        out = layer_forward(self.inner, self.kind, inputs, self.weight_q, self.bias_q)
        return out if self.output_quant is None else self.output_quant(out)


def accumulator_bias(module: nn.Module, layer: LayerQuant) -> Tensor | None:
    """The layer's bias rounded onto its int32 accumulator grid (input scale x per-channel weight scale)."""
    if module.bias is None or layer.weight is None:
        return None
    step = torch.tensor(layer.inputs[0].scale[0], dtype=torch.float64) * layer.weight.tensors()[0].double()
    return (torch.round(module.bias.detach().double() / step) * step).float()


def replace_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` at the dotted `name` inside `model`, in place of what was there."""
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def apply_plan(model: nn.Module, plan: QuantPlan, inplace: bool = False) -> nn.Module:
    """A model whose planned layers quantize exactly as `plan` says; everything else is untouched float.

    If the plan was calibrated on an SQ-b-smoothed model, apply it to that same smoothed model.
    """
    target = model if inplace else copy.deepcopy(model)
    for name, layer in plan.layers.items():
        if not _has_submodule(target, name):
            raise QuantError(f"plan layer {name!r} does not exist in the model")
        module = target.get_submodule(name)
        if isinstance(module, FakeQuantLayer):
            raise QuantError(f"layer {name!r} is already fake-quantized")
        if layer_kind(module) != layer.kind:
            raise QuantError(f"plan says {name!r} is {layer.kind}, the model has {type(module).__name__}")
        replace_submodule(target, name, FakeQuantLayer(module, layer))
    return target


def strip_fake_quant(model: nn.Module) -> nn.Module:
    """Put the original modules back in place of every `FakeQuantLayer` (in place)."""
    wrapped = [name for name, m in model.named_modules() if isinstance(m, FakeQuantLayer)]
    for name in wrapped:
        replace_submodule(model, name, model.get_submodule(name).inner)
    return model
