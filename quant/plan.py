"""`QuantPlan`: the quantization decision for a model, as data.

It is the contract between `quant/` (which decides) and `converters/` (which lowers): a converter's PT2E
`Quantizer` annotates exactly the plan's layers and builds its specs from the plan's fixed qparams
(`TensorQParams.torch_dtype`, `quant_min/quant_max`, `torch_qscheme`, `ch_axis`, `tensors()` — per-tensor
entries map one-to-one onto `FixedQParamsQuantizationSpec`), and the ONNX path writes them as QDQ pairs.
Whatever is not in the plan (Softmax, LayerNorm, GELU, residual adds) stays float: quantizing every op
type destroys ViT accuracy (see STACK.md).

Layer names are the module's qualified name in `model.named_modules()`, which PT2E graphs carry in each
node's `nn_module_stack`; an attention matmul is named after its `MatMul` module.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import torch

from quant.errors import QuantError

SCHEMA_VERSION = 2  # 2: per_group granularity and TensorQParams.group_size (version-1 plans still load)
_FORMAT = "edgevit.quant_plan"

LayerKind = Literal["linear", "conv2d", "matmul"]
Granularity = Literal["per_tensor", "per_channel", "per_group"]


@dataclass
class TensorQParams:
    """How one tensor (a weight or an activation input) is quantized, with its fixed qparams.

    `per_group` (weights only): along `ch_axis` = 0, each output row is cut into groups of `group_size`
    consecutive input columns (a conv's (in, kh, kw) flattened first), each with its own scale; `scale` and
    `zero_point` are flattened row-major over (out, in // group_size). What 4-bit kernels run (onnxruntime's
    MatMulNBits, XNNPACK's blockwise GEMM, Core ML per-block int4): one scale per row is too coarse at 4 bits.
    """

    bits: int
    symmetric: bool
    granularity: Granularity
    scale: list[float]
    zero_point: list[int]
    quant_min: int
    quant_max: int
    observer: str
    ch_axis: int | None = None
    group_size: int | None = None

    def __post_init__(self) -> None:
        if len(self.scale) != len(self.zero_point):
            raise QuantError(f"{len(self.scale)} scales but {len(self.zero_point)} zero-points")
        if self.granularity == "per_tensor" and len(self.scale) != 1:
            raise QuantError(f"per-tensor qparams need one scale, got {len(self.scale)}")
        if self.granularity == "per_channel" and self.ch_axis is None:
            raise QuantError("per-channel qparams need a ch_axis")
        if self.granularity == "per_group" and (self.ch_axis != 0 or not self.group_size or self.group_size < 1):
            raise QuantError(f"per-group qparams need ch_axis 0 and a positive group_size, got {self.group_size}")
        if self.granularity != "per_group" and self.group_size is not None:
            raise QuantError(f"group_size is only meaningful for per_group qparams, not {self.granularity}")
        if any(not self.quant_min <= z <= self.quant_max for z in self.zero_point):
            raise QuantError(f"a zero-point lies outside [{self.quant_min}, {self.quant_max}]")

    @property
    def torch_dtype(self) -> torch.dtype:
        """Storage dtype of the integers (a 4-bit range still lives in int8, as PT2E specs expect)."""
        if self.bits <= 8:
            return torch.int8 if self.quant_min < 0 else torch.uint8
        return torch.int16

    def groups(self, shape: list[int] | tuple[int, ...]) -> tuple[int, int]:
        """(rows, groups per row) of a per-group weight of `shape`; QuantError when the columns do not divide."""
        rows, cols = shape[0], math.prod(shape[1:])
        assert self.group_size is not None
        if cols % self.group_size:
            raise QuantError(f"{cols} input columns do not split into groups of {self.group_size}")
        if len(self.scale) != rows * (cols // self.group_size):
            raise QuantError(f"{len(self.scale)} per-group scales do not fit a weight of shape {list(shape)}")
        return rows, cols // self.group_size

    @property
    def torch_qscheme(self) -> torch.qscheme:
        if self.granularity == "per_group":
            raise QuantError("per-group qparams have no torch qscheme: lower them with a blockwise (group) kernel")
        if self.granularity == "per_channel":
            return torch.per_channel_symmetric if self.symmetric else torch.per_channel_affine
        return torch.per_tensor_symmetric if self.symmetric else torch.per_tensor_affine

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale float32, zero_point int64) as tensors, the form fake-quant ops and observers use."""
        return (
            torch.tensor(self.scale, dtype=torch.float32),
            torch.tensor(self.zero_point, dtype=torch.int64),
        )


@dataclass
class Smoothing:
    """An SQ-b transform folded into the model: x' = (x - shift) / scale feeds W' = W·diag(scale).

    `folded_into` names the LayerNorm whose affine absorbed 1/scale and the shift, or is "explicit" when
    the layer got its own per-channel op (no LayerNorm feeds it directly). Kept so the same transform can be
    replayed on a fresh fp32 checkpoint (`smoothquant.apply_smoothing`) and audited.
    """

    alpha: float
    scale: list[float]
    shift: list[float]
    folded_into: str


@dataclass
class LayerQuant:
    """One quantized op: its weight (None for an activation-activation matmul) and its activation inputs.

    `output` (a conv's only; None in plans written before it existed, and for every other op) is the grid its
    output is quantized onto: a target's integer conv that writes int8 (onnxruntime's QLinearConv) needs one,
    and the fake-quant model then rounds the output there too (`quant.layer_ops.quantizes_output` says which
    convs calibration gives one).
    """

    name: str
    kind: LayerKind
    method: str
    weight: TensorQParams | None
    inputs: list[TensorQParams]
    weight_shape: list[int] = field(default_factory=list)
    smoothing: Smoothing | None = None
    output: TensorQParams | None = None

    @property
    def grouped(self) -> bool:
        """Whether the weight is quantized per group (blocks of input columns): the targets' 4-bit block paths."""
        return self.weight is not None and self.weight.granularity == "per_group"

    @property
    def weight_bits(self) -> int | None:
        return self.weight.bits if self.weight is not None else None

    @property
    def act_bits(self) -> int:
        return max(q.bits for q in self.inputs)

    @property
    def weight_numel(self) -> int:
        return math.prod(self.weight_shape) if self.weight is not None else 0

    @property
    def weight_bytes(self) -> int:
        """Packed integer payload at the planned bits (qparams and bias not counted)."""
        return math.ceil(self.weight_numel * self.weight.bits / 8) if self.weight is not None else 0


@dataclass
class QuantPlan:
    """Per-layer quantization decisions, in model execution order, JSON-serialisable (schema-versioned)."""

    layers: dict[str, LayerQuant]
    metadata: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __getitem__(self, name: str) -> LayerQuant:
        return self.layers[name]

    def subset(self, names: list[str]) -> QuantPlan:
        """The plan restricted to `names` (e.g. to quantize one layer for a sensitivity probe)."""
        missing = [n for n in names if n not in self.layers]
        if missing:
            raise QuantError(f"layer {missing[0]!r} is not in the plan")
        return replace(self, layers={n: self.layers[n] for n in names})

    def with_smoothing(self, records: dict[str, Smoothing]) -> QuantPlan:
        """Attach the SQ-b records of the transform the calibrated model went through."""
        layers = dict(self.layers)
        for name, record in records.items():
            if name in layers:
                layer = layers[name]
                layers[name] = replace(layer, smoothing=record, method=f"sq-b+{layer.method}")
        return replace(self, layers=layers)

    def grouped_layers(self) -> list[str]:
        """Names of the layers whose weights are quantized per group, in plan order."""
        return [name for name, layer in self.layers.items() if layer.grouped]

    def weight_bytes(self) -> int:
        return sum(layer.weight_bytes for layer in self.layers.values())

    def summary(self) -> dict[str, Any]:
        """JSON-able digest for the bundle manifest: bit histograms, sizes, methods."""
        weighted = [layer for layer in self.layers.values() if layer.weight is not None]
        numel = sum(layer.weight_numel for layer in weighted)
        planned = self.weight_bytes()
        return {
            "layers": len(self.layers),
            "kinds": dict(Counter(layer.kind for layer in self.layers.values())),
            "weight_bits": {str(b): n for b, n in sorted(Counter(lw.weight_bits for lw in weighted).items())},
            "activation_bits": {
                str(b): n for b, n in sorted(Counter(la.act_bits for la in self.layers.values()).items())
            },
            "weight_params": numel,
            "weight_bytes": planned,
            "weight_bytes_fp32": numel * 4,
            "compression_vs_fp32": (numel * 4 / planned) if planned else None,
            "methods": dict(Counter(layer.method for layer in self.layers.values())),
            "smoothed_layers": sum(layer.smoothing is not None for layer in self.layers.values()),
            # layers an allocation kept float are not in `layers` (whatever the plan leaves out runs float)
            "float_layers": len(self.metadata.get("allocation", {}).get("float_layers", [])),
        }

    def to_json(self, indent: int | None = 2) -> str:
        doc = {
            "format": _FORMAT,
            "schema_version": self.schema_version,
            "metadata": self.metadata,
            "layers": [asdict(layer) for layer in self.layers.values()],
        }
        return json.dumps(doc, indent=indent)

    @classmethod
    def from_json(cls, text: str) -> QuantPlan:
        doc = json.loads(text)
        if doc.get("format") != _FORMAT:
            raise QuantError(f"not a quantization plan (format is {doc.get('format')!r}, want {_FORMAT!r})")
        version = doc.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise QuantError(f"plan schema version {version} is newer than this edgevit understands ({SCHEMA_VERSION})")
        layers = {}
        for raw in doc["layers"]:
            weight = TensorQParams(**raw["weight"]) if raw["weight"] is not None else None
            inputs = [TensorQParams(**q) for q in raw["inputs"]]
            smoothing = Smoothing(**raw["smoothing"]) if raw["smoothing"] is not None else None
            layers[raw["name"]] = LayerQuant(
                name=raw["name"],
                kind=raw["kind"],
                method=raw["method"],
                weight=weight,
                inputs=inputs,
                weight_shape=list(raw["weight_shape"]),
                smoothing=smoothing,
                output=TensorQParams(**raw["output"]) if raw.get("output") is not None else None,
            )
        return cls(layers=layers, metadata=doc.get("metadata", {}), schema_version=version)
