"""The manifest's shape: one frozen dataclass per closed object of the published schema, which is generated from
them (`python -m converters.bundle.schema_gen` writes `bundle.v1.schema.json`; a test checks it is up to date).

Annotations give the schema's types; what they cannot say rides along (see `schema_types`): shared types in
`Annotated`, a field's description and keywords in its metadata (`about`), rules across fields in a class's
`__schema__`. `to_dict` gives plain JSON types in the schema's key order; `from_dict` takes what `to_dict` or a
validated manifest gives. Objects the schema leaves open (model config, versions, notes, facts, the quant section's
calibration, summary and metadata) stay dicts. Only the caller knows the model, so it passes a `Header`; the writer
adds the rest (schema, time, versions, machine) and the artifacts.
"""

from __future__ import annotations

import datetime as dt
import math
import platform
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from converters.artifact import Artifact, OutputParity, TensorSpec
from converters.bundle.schema_types import (
    Count,
    EfficientTAMConfig,
    Name,
    Parity,
    Positive,
    RelPath,
    Sha256,
    Target,
    Text,
    about,
)
from converters.unit import DeployUnit

SCHEMA = "edgevit.bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def json_safe(value: Any) -> Any:
    """Non-finite floats as the strings "inf"/"-inf"/"nan", as `Artifact.to_dict` writes them: strict JSON
    parsers in apps (Swift's JSONDecoder, Kotlin's) reject bare Infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class _Record:
    """`to_dict` of a manifest dataclass: its fields in order, nested records and tuples made plain JSON."""

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: _plain(getattr(self, f.name))
            for f in fields(self)
            if not (f.metadata.get("absent_if_none") and getattr(self, f.name) is None)
        }


def _tensor(d: dict[str, Any]) -> TensorSpec:
    return TensorSpec(d["name"], tuple(d["shape"]), d["dtype"])


@dataclass(frozen=True)
class ModelInfo(_Record):
    """What an app must know about the model without importing it: input size, preprocessing, task, config."""

    __schema__: ClassVar[dict[str, Any]] = {
        "$def": "model",
        "if": {"properties": {"name": {"const": "efficienttam"}}, "required": ["name"]},
        "then": {"properties": {"config": EfficientTAMConfig}},
    }

    name: Name
    variant: Name
    input_size: tuple[Count, Count] = about("[height, width] of the image input.")
    task: Name
    mean: tuple[float, float, float]
    std: tuple[Positive, Positive, Positive]
    layout: Text
    config: dict[str, Any] | None = about(
        "The variant's hyper-parameters (open per model; EfficientTAM's are fixed below), or null."
    )
    loop: Literal["single", "video"] = about(
        "How the units are driven: single (one call per image) or video (a loop carrying memory between frames). "
        "Optional: absent in bundles written before it existed.",
        default="single",
    )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelInfo:
        """From a manifest's `model` or a model spec's `to_dict()` plus its config."""
        input_size, mean, std = tuple(d["input_size"]), tuple(d["mean"]), tuple(d["std"])
        loop = d.get("loop", "single")
        return cls(d["name"], d["variant"], input_size, d["task"], mean, std, d["layout"], d["config"], loop)


@dataclass(frozen=True)
class Weights(_Record):
    """Where the weights came from: "checkpoint" (with its sha256), "random", or what the model says."""

    source: Text = about('"checkpoint", "random", or what a model that ships its weights says about them.')
    checkpoint_sha256: Sha256 | None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Weights:
        return cls(d["source"], d["checkpoint_sha256"])


@dataclass(frozen=True)
class Machine(_Record):
    """The converting machine."""

    system: Text
    machine: Text

    @classmethod
    def here(cls) -> Machine:
        return cls(platform.system(), platform.machine())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Machine:
        return cls(d["system"], d["machine"])


@dataclass(frozen=True)
class UnitInfo(_Record):
    """A deploy unit as PyTorch had it (artifacts record the same I/O as their runtime reads it back)."""

    __schema__: ClassVar[dict[str, Any]] = {
        "$def": "unit",
        "description": "A deploy unit as PyTorch had it; artifacts record the same I/O as their runtime reads it back.",
    }

    name: Name
    inputs: tuple[TensorSpec, ...] = about(minItems=1)
    outputs: tuple[Name, ...] = about(minItems=1)
    image_inputs: tuple[Name, ...] = about("Inputs a target may take as an image (Core ML ImageType).")
    notes: dict[str, Text] = about("How to fill inputs, by input name (open).")

    @classmethod
    def from_unit(cls, unit: DeployUnit) -> UnitInfo:
        inputs = tuple(
            TensorSpec(n, tuple(x.shape), str(x.dtype).removeprefix("torch."))
            for n, x in zip(unit.input_names, unit.example_inputs, strict=True)
        )
        return cls(unit.name, inputs, tuple(unit.output_names), tuple(unit.image_inputs), dict(unit.notes))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UnitInfo:
        inputs = tuple(_tensor(t) for t in d["inputs"])
        return cls(d["name"], inputs, tuple(d["outputs"]), tuple(d["image_inputs"]), dict(d["notes"]))


# The file each target writes, by the end of its path.
_SUFFIXES = {
    "onnx": (r"\.onnx$", "a .onnx file"),
    "executorch": (r"\.pte$", "a .pte file"),
    "tflite": (r"\.tflite$", "a .tflite file"),
    "coreml": (r"\.(mlpackage|mlmodel)$", "a .mlpackage or .mlmodel"),
}


@dataclass(frozen=True)
class ArtifactEntry(_Record):
    """One converted unit for one target, its path relative to the bundle. Exactly one of `parity` and
    `parity_note` is set (figures where the artifact ran here, else why it could not)."""

    __schema__: ClassVar[dict[str, Any]] = {
        "$def": "artifact",
        "description": "One converted unit for one target. Exactly one of parity and parity_note is set.",
        "allOf": [
            {
                "if": {"properties": {"parity": {"type": "null"}}},
                "then": {"properties": {"parity_note": {"type": "string", "minLength": 1}}},
                "else": {"properties": {"parity_note": {"type": "null"}}},
            },
            *(
                {
                    "if": {"properties": {"target": {"const": target}}},
                    "then": {"properties": {"path": {"pattern": pattern, "errorMessage": (
                        f"must be a relative path inside the bundle to {what} ({target} target)"
                    )}}},
                }
                for target, (pattern, what) in _SUFFIXES.items()
            ),
        ],
    }  # fmt: skip

    target: Target
    unit: Name
    path: RelPath
    precision: str = about(
        "fp32, fp16, int8 (all-8-bit plan), or w<weight bits joined by '-'>a<activation bits>, e.g. w8a8, w4-8a8.",
        pattern="^(fp32|fp16|int8|w[0-9]{1,2}(-[0-9]{1,2})*a[0-9]{1,2})$",
        errorMessage="must be fp32, fp16, int8 or w<bits>a<bits> (e.g. w8a8, w4-8a8)",
    )
    inputs: tuple[TensorSpec, ...] = about(minItems=1)
    outputs: tuple[TensorSpec, ...] = about(minItems=1)
    size_bytes: int = about("Bytes of the file, or of every file of a package.", minimum=1)
    sha256: Sha256
    versions: dict[str, Text]
    conversion_seconds: float = about(minimum=0)
    parity: Parity | None
    parity_note: Text | None
    min_sqnr_db: float | None
    facts: dict[str, Any] = about("Backend findings (open).")

    @classmethod
    def from_artifact(cls, art: Artifact, bundle: Path) -> ArtifactEntry:
        """The entry of an artifact converted into the folder `bundle` (its path is stored relative to it)."""
        return cls.from_dict({**art.to_dict(), "path": Path(art.path).relative_to(bundle).as_posix()})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArtifactEntry:
        parity = d["parity"]
        if parity is not None:  # float() reads the "inf"/"nan" strings back; OutputParity writes them again
            parity = {k: OutputParity(float(p["sqnr_db"]), float(p["max_abs_diff"])) for k, p in parity.items()}
        return cls(
            d["target"], d["unit"], d["path"], d["precision"],
            tuple(_tensor(t) for t in d["inputs"]), tuple(_tensor(t) for t in d["outputs"]),
            d["size_bytes"], d["sha256"], dict(d["versions"]), d["conversion_seconds"],
            parity, d["parity_note"], d["min_sqnr_db"], dict(d["facts"]),
        )  # fmt: skip


@dataclass(frozen=True)
class QuantUnit(_Record):
    """One unit's quantization: where its `QuantPlan` JSON lies in the bundle, the plan's summary and metadata."""

    plan: RelPath
    summary: dict[str, Any]
    metadata: dict[str, Any]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantUnit:
        return cls(d["plan"], dict(d["summary"]), dict(d["metadata"]))


@dataclass(frozen=True)
class QuantSection(_Record):
    """How a quantized bundle's numbers were made (absent from float bundles), so a run can be audited or
    replayed on a new checkpoint."""

    __schema__: ClassVar[dict[str, Any]] = {
        "$def": "quant",
        "description": "How a quantized bundle's numbers were made; present only in quantized bundles.",
    }

    method: Literal["ptq", "qhyvit", "mptq"]
    bits: Literal["8", "6", "4", "mixed"]
    budget_mb: Positive | None
    calibration: dict[str, Any] = about(
        "The calibration data: its source and how much of it was used (open).",
        required=["source"],
        properties={"source": Text},
    )
    skipped_targets: dict[Target, Text] = about("Targets asked for but not written, with the reason.")
    units: dict[str, QuantUnit] = about(
        "Per unit name: its QuantPlan JSON, the plan's summary and metadata.", minProperties=1
    )

    def to_dict(self) -> dict[str, Any]:
        return json_safe(super().to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantSection:
        units = {name: QuantUnit.from_dict(u) for name, u in d["units"].items()}
        return cls(d["method"], d["bits"], d["budget_mb"], dict(d["calibration"]), dict(d["skipped_targets"]), units)


@dataclass(frozen=True)
class PassEntry(_Record):
    """One pass applied to the deploy units before lowering (pruning, token compression, extraction, quant), in
    the order the recipe ran them: its kind and what it did, so a reader sees how the units were changed."""

    __schema__: ClassVar[dict[str, Any]] = {"$def": "pass"}

    kind: Name
    info: dict[str, Any] = about("What the pass did (open: each kind records its own settings and figures).")

    def to_dict(self) -> dict[str, Any]:
        return json_safe(super().to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PassEntry:
        return cls(d["kind"], dict(d["info"]))


@dataclass(frozen=True)
class Header:
    """What only the caller knows (this package never sees a model): the model, its weights, its deploy units."""

    model: ModelInfo
    weights: Weights
    units: tuple[UnitInfo, ...]
    passes: tuple[PassEntry, ...] = ()


@dataclass(frozen=True)
class Manifest(_Record):
    """`manifest.json`: the contract between the converter and the apps/runners that load the artifacts."""

    __schema__: ClassVar[dict[str, Any]] = {
        "$id": "https://edgevit.dev/schemas/bundle.v1.schema.json",
        "title": "edgevit bundle manifest, schema_version 1",
        "description": (
            "manifest.json of an edgevit bundle: the contract between the converter and the apps/runners that load "
            "its artifacts. Readers refuse a schema_version newer than the one they know. Keys marked open (facts, "
            "versions, notes, quant metadata) may gain entries within version 1; every other object is closed. "
            'Non-finite floats are the strings "inf", "-inf", "nan" (strict JSON).'
        ),
    }

    schema: Literal["edgevit.bundle"]
    schema_version: Literal[1]
    created: str = about(
        "UTC time the bundle was written (RFC 3339).",
        format="date-time",
        pattern="^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$",
        errorMessage="must be an RFC 3339 date-time such as 2025-01-31T12:00:00+00:00",
    )
    model: ModelInfo
    weights: Weights
    versions: dict[str, Text] = about(
        "Versions of the converting environment (open: more packages may be listed).", required=["torch", "python"]
    )
    machine: Machine
    units: tuple[UnitInfo, ...] = about(minItems=1)
    # A float bundle has no quant section (the schema has no null one).
    quant: QuantSection | None = about(absent_if_none=True)
    # A bundle made without passes has no passes list.
    passes: tuple[PassEntry, ...] | None = about(
        "The passes applied to the deploy units before lowering, in order.", absent_if_none=True, minItems=1
    )
    artifacts: tuple[ArtifactEntry, ...] = about(minItems=1)

    @classmethod
    def new(cls, header: Header, artifacts: Iterable[ArtifactEntry], quant: QuantSection | None = None) -> Manifest:
        """A manifest written now, on this machine, with this environment's versions."""
        return cls(
            SCHEMA,
            SCHEMA_VERSION,
            dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            header.model,
            header.weights,
            {"torch": torch.__version__, "python": platform.python_version()},
            Machine.here(),
            header.units,
            quant,
            header.passes or None,
            tuple(artifacts),
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        """The dataclasses of a validated manifest (`read_manifest`'s result)."""
        return cls(
            d["schema"],
            d["schema_version"],
            d["created"],
            ModelInfo.from_dict(d["model"]),
            Weights.from_dict(d["weights"]),
            dict(d["versions"]),
            Machine.from_dict(d["machine"]),
            tuple(UnitInfo.from_dict(u) for u in d["units"]),
            QuantSection.from_dict(d["quant"]) if "quant" in d else None,
            tuple(PassEntry.from_dict(p) for p in d["passes"]) if "passes" in d else None,
            tuple(ArtifactEntry.from_dict(a) for a in d["artifacts"]),
        )
