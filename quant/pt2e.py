"""A `QuantPlan` handed to PT2E: a torchao `Quantizer` that annotates exactly the plan's layers.

Why a quantizer of our own rather than a backend's (XNNPACKQuantizer, litert-torch's PT2EQuantizer): those
pick their own ops and observe their own ranges, so the artifact would no longer be the model that
calibration, SQ-b and mixed precision judged. `PlanQuantizer` annotates only the plan's Linear / Conv2d /
MatMul ops, found by module name through each graph node's `nn_module_stack`, and gives every annotated
tensor the plan's fixed qparams: per-tensor activations as `FixedQParamsQuantizationSpec`, per-channel weights
through `FixedPerChannelQParamsObserver` (PT2E has no fixed per-channel spec). The converted graph then runs
the same arithmetic as `fake_quant.apply_plan`, in the q/dq form every PT2E-consuming backend pattern-matches.

The plan's static activation grids are one rendering (`activations="plan"`, the one fake-quant simulates).
Phone runtimes want another: XNNPACK and LiteRT run a GEMM on a static int8 activation only as
dq → op → q, with its *output* quantized too, and quantizing GEMM outputs wrecks ViTs (measured on the real
DINOv2-S: an int8 output after every MLP fc1 alone takes the model to ~10 dB; those outputs span the
LayerNorm outliers' range and GELU then discards their negative half). Their int8 GEMMs with float outputs
take activations quantized at run time from each tensor's own range instead (`"dynamic"`: XNNPACK's qd8;
`"weights"`: only the weights are annotated, and LiteRT's dynamic-range kernels quantize the activation
inside the kernel). The plan's weights are used exactly in every mode.

Weights are snapped onto the plan's grid before export (`snap_weights`): PT2E's quantize computes
round(w * (1/s)) where fake-quant computes round(w / s), and the two differ on a few weights that sit at a
rounding tie (measured: 1 to 3 weights in a million on a ViT-Ti, by one level). On a snapped weight both
give the plan's integer exactly, so every PT2E-fed artifact holds the integers fake-quant judged.

4-bit weights: a symmetric 4-bit plan grid is the restricted [-7, 7] (quant.observers), held in int8 storage.
XNNPACK's partitioner takes a weight as 4-bit (its qc4w GEMMs: 4-bit per-channel weights, packed two to a
byte) only when its spec says exactly int8 over [-8, 7], and stores anything else as int8. `int4_full_range`
declares the plan's 4-bit per-channel Linear weights over [-8, 7]; the integers stay the plan's, since a
snapped weight never rounds to -8. Convolutions keep the plan's declaration: XNNPACK has no 4-bit
convolution (its qc4w packing takes 2-D weights only).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchao.quantization.pt2e import allow_exported_model_train_eval
from torchao.quantization.pt2e.observer import ObserverBase, PlaceholderObserver
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from torchao.quantization.pt2e.quantizer import (
    FixedQParamsQuantizationSpec,
    QuantizationAnnotation,
    QuantizationSpec,
    QuantizationSpecBase,
    Quantizer,
)

from quant.errors import QuantError
from quant.observers import fake_quantize
from quant.plan import LayerKind, LayerQuant, QuantPlan, TensorQParams

# How the plan's activation inputs are rendered: its fixed grids, int8 computed per call from each tensor's
# own range (XNNPACK's dynamic "qd8" GEMMs), or not at all (weights only; LiteRT's dynamic-range kernels
# quantize activations inside the kernel).
ACTIVATION_MODES = ("plan", "dynamic", "weights")

# The aten ops (pre-dispatch export IR) that implement each planned layer kind; the weight is argument 1.
_OPS: dict[LayerKind, tuple[torch._ops.OpOverload, ...]] = {
    "linear": (torch.ops.aten.linear.default,),
    "conv2d": (torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default),
    "matmul": (torch.ops.aten.matmul.default, torch.ops.aten.bmm.default, torch.ops.aten.mm.default),
}


class FixedPerChannelQParamsObserver(ObserverBase):
    """Per-channel observer that observes nothing and answers the plan's scales (PT2E has no such spec).

    The class name must contain "PerChannel": PT2E's prepare drops `ch_axis` from the spec's arguments for
    any observer class not named so.
    """

    def __init__(
        self,
        scale: Sequence[float],
        zero_point: Sequence[int],
        dtype: torch.dtype = torch.int8,
        qscheme: torch.qscheme = torch.per_channel_symmetric,
        quant_min: int = -127,
        quant_max: int = 127,
        ch_axis: int = 0,
        is_dynamic: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(dtype=dtype, is_dynamic=is_dynamic)
        self.qscheme = qscheme
        self.quant_min, self.quant_max, self.ch_axis = quant_min, quant_max, ch_axis
        self.register_buffer("scale", torch.tensor(list(scale), dtype=torch.float32))
        self.register_buffer("zero_point", torch.tensor(list(zero_point), dtype=torch.int64))

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[self.ch_axis] != self.scale.numel():
            raise QuantError(
                f"weight has {x.shape[self.ch_axis]} channels on axis {self.ch_axis} but the plan has "
                f"{self.scale.numel()} scales: the plan was made for another model"
            )
        return x

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        return self.scale, self.zero_point


def activation_spec(q: TensorQParams) -> FixedQParamsQuantizationSpec:
    """The plan's per-tensor activation qparams as a PT2E spec."""
    if q.granularity != "per_tensor":
        raise QuantError("activations must be quantized per-tensor: no target has per-channel activation kernels")
    return FixedQParamsQuantizationSpec(
        dtype=q.torch_dtype,
        scale=q.scale[0],
        zero_point=q.zero_point[0],
        quant_min=q.quant_min,
        quant_max=q.quant_max,
        qscheme=q.torch_qscheme,
    )


def weight_spec(q: TensorQParams) -> QuantizationSpecBase:
    """The plan's weight qparams as a PT2E spec (per-channel through the fixed observer above)."""
    if q.granularity == "per_tensor":
        return activation_spec(q)
    return QuantizationSpec(
        dtype=q.torch_dtype,
        observer_or_fake_quant_ctr=FixedPerChannelQParamsObserver.with_args(
            scale=tuple(q.scale), zero_point=tuple(q.zero_point)
        ),
        quant_min=q.quant_min,
        quant_max=q.quant_max,
        qscheme=q.torch_qscheme,
        ch_axis=q.ch_axis,
    )


def dynamic_activation_spec() -> QuantizationSpec:
    """int8 per-tensor activations quantized at run time from each input's own range (XNNPACK's qd8)."""
    return QuantizationSpec(
        dtype=torch.int8,
        observer_or_fake_quant_ctr=PlaceholderObserver.with_args(eps=2**-12),
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_tensor_affine,
        is_dynamic=True,
    )


def is_int4_linear(layer: LayerQuant) -> bool:
    """A Linear whose plan grid is 4-bit symmetric per-channel: the weights XNNPACK can hold as 4-bit."""
    q = layer.weight
    return (
        layer.kind == "linear"
        and q is not None
        and q.bits == 4
        and q.symmetric
        and q.granularity == "per_channel"
        and (q.quant_min, q.quant_max) == (-7, 7)
    )


def full_range_int4(q: TensorQParams) -> TensorQParams:
    """The same 4-bit grid declared over [-8, 7], the form XNNPACK's partitioner recognises as 4-bit."""
    return dataclasses.replace(q, quant_min=-8)


@torch.no_grad()
def snap_weights(module: nn.Module, plan: QuantPlan, names: Sequence[str] | None = None) -> nn.Module:
    """A copy of `module` whose planned weights (all, or `names`) already lie on the plan's grid.

    Quantizing a snapped weight with the plan's qparams gives back exactly the plan's integers whatever
    clamp range the quantizer declares, and the float model computes what the quantized one will.
    Layers the module lacks, or whose weight does not fit the plan's scales, are left as they are, for the
    quantizer to name (a plan made for another model).
    """
    snapped = copy.deepcopy(module)
    for name in plan.layers if names is None else names:
        q = plan.layers[name].weight
        try:
            weight = snapped.get_submodule(name).weight
        except AttributeError:
            continue
        if q is None or not isinstance(weight, Tensor):
            continue
        if (weight.shape[q.ch_axis] if q.ch_axis is not None else 1) != len(q.scale):
            continue
        scale, zero_point = q.tensors()
        weight.copy_(fake_quantize(weight, scale, zero_point, q.quant_min, q.quant_max, q.ch_axis))
    return snapped


def node_owner(node: torch.fx.Node) -> str | None:
    """Qualified name of the innermost module that called `node`'s op (None for top-level code)."""
    stack = node.meta.get("nn_module_stack")
    return list(stack.values())[-1][0] if stack else None


class PlanQuantizer(Quantizer):
    """Annotates the plan's layers with the plan's qparams, and nothing else; outputs stay float unless the plan
    gives one a grid (a conv's `LayerQuant.output`, used by the `"plan"` rendering only).

    `activations` is one of `ACTIVATION_MODES` (see the module doc); `int4_full_range` declares 4-bit Linear
    weights over [-8, 7] (see the module doc: only safe on weights snapped onto the plan's grid).
    """

    def __init__(self, plan: QuantPlan, activations: str = "plan", int4_full_range: bool = False) -> None:
        super().__init__()
        if activations not in ACTIVATION_MODES:
            raise QuantError(f"unknown activation mode {activations!r}; valid: {', '.join(ACTIVATION_MODES)}")
        matmuls = [lq.name for lq in plan.layers.values() if lq.kind == "matmul"]
        if activations != "plan" and matmuls:
            raise QuantError(
                f"plan layer {matmuls[0]!r} multiplies two activations, which only the plan's static grids "
                f"quantize; leave matmul layers out of the plan for activations={activations!r}"
            )
        self.plan = plan
        self.activations = activations
        self.int4_full_range = int4_full_range
        self.annotated: dict[str, int] = {}

    def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        self.annotated = {name: 0 for name in self.plan.layers}
        for node in model.graph.nodes:
            if node.op != "call_function":
                continue
            layer = self.plan.layers.get(node_owner(node) or "")
            if layer is None or node.target not in _OPS[layer.kind]:
                continue
            # The plan's static rendering rounds a conv's output where the plan gives it a grid, as fake-quant does.
            graded = self.activations == "plan" and layer.output is not None
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map=self._input_specs(node, layer),
                output_qspec=activation_spec(layer.output) if graded else None,
                _annotated=True,
            )
            self.annotated[layer.name] += 1
        return model

    def _input_specs(self, node: torch.fx.Node, layer: LayerQuant) -> dict:
        args = node.args
        if layer.kind == "matmul":
            if len(layer.inputs) != 2:
                raise QuantError(f"plan layer {layer.name!r} is a matmul with {len(layer.inputs)} inputs, not 2")
            return {args[0]: activation_spec(layer.inputs[0]), args[1]: activation_spec(layer.inputs[1])}
        specs = {}
        if self.activations == "plan":
            specs[args[0]] = activation_spec(layer.inputs[0])
        elif self.activations == "dynamic":
            specs[args[0]] = dynamic_activation_spec()
        if layer.weight is not None:
            wide = self.int4_full_range and is_int4_linear(layer)
            specs[args[1]] = weight_spec(full_range_int4(layer.weight) if wide else layer.weight)
        return specs

    def validate(self, model: torch.fx.GraphModule) -> None:
        missing = [name for name, count in self.annotated.items() if count == 0]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise QuantError(
                f"plan layer {missing[0]!r}{more} has no {self.plan.layers[missing[0]].kind} op in the exported "
                "graph: the plan was made for another model, or the layer is never called"
            )


@torch.no_grad()
def quantize_pt2e(
    module: nn.Module,
    example_inputs: Sequence[Tensor],
    plan: QuantPlan,
    *,
    activations: str = "plan",
    fold_weights: bool = True,
    int4_full_range: bool = False,
) -> torch.fx.GraphModule:
    """Export `module`, annotate it with `plan`, and return the converted q/dq graph module.

    Every qparam is fixed (or computed at run time), so calibration is the single call on `example_inputs`
    PT2E needs to see shapes. `fold_weights` stores weights as integer constants feeding a dequantize (what
    XNNPACK takes); LiteRT's converter wants them unfolded, as float → quantize → dequantize.
    `int4_full_range` declares 4-bit Linear weights as XNNPACK's 4-bit GEMMs want them (see the module
    doc). What is exported is a copy of `module` with the planned weights snapped onto the plan's grid.
    """
    example_inputs = tuple(example_inputs)
    snapped = snap_weights(module, plan).eval()  # a copy: the caller's module keeps its weights and mode
    graph = torch.export.export(snapped, example_inputs, strict=False).module()
    prepared = prepare_pt2e(graph, PlanQuantizer(plan, activations, int4_full_range))
    prepared(*example_inputs)
    # .eval()/.train() are no-ops on it then, so code that toggles modes (metrics, runners) can call it.
    return allow_exported_model_train_eval(convert_pt2e(prepared, fold_quantize=fold_weights))
