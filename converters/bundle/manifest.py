"""The manifest's shape: one frozen dataclass per closed object of the published schema (`bundle.v1.schema.json`,
kept in agreement by tests/test_bundle_manifest.py).

`to_dict` gives plain JSON types in the schema's key order; `from_dict` takes what `to_dict` or a validated
manifest gives. Objects the schema leaves open (model config, versions, notes, facts, the quant section's
calibration, summary and metadata) stay dicts. Only the caller knows the model, so it passes a `Header`; the
writer adds the rest (schema, time, versions, machine) and the artifacts.
"""

from __future__ import annotations

import datetime as dt
import math
import platform
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from converters.artifact import Artifact, OutputParity, TensorSpec
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
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


def _tensor(d: dict[str, Any]) -> TensorSpec:
    return TensorSpec(d["name"], tuple(d["shape"]), d["dtype"])


@dataclass(frozen=True)
class ModelInfo(_Record):
    """What an app must know about the model without importing it: input size, preprocessing, task, config."""

    name: str
    variant: str
    input_size: tuple[int, int]  # (height, width) of the image input
    task: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    layout: str
    config: dict[str, Any] | None  # the variant's hyper-parameters, or None
    # How the units are driven: "single" (one call per image) or "video" (a loop carrying memory between frames).
    # Optional in the schema: bundles written before it existed are "single" ones or EfficientTAM's.
    loop: str = "single"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelInfo:
        """From a manifest's `model` or a model spec's `to_dict()` plus its config."""
        input_size, mean, std = tuple(d["input_size"]), tuple(d["mean"]), tuple(d["std"])
        loop = d.get("loop", "single")
        return cls(d["name"], d["variant"], input_size, d["task"], mean, std, d["layout"], d["config"], loop)


@dataclass(frozen=True)
class Weights(_Record):
    """Where the weights came from: "checkpoint" (with its sha256), "random", or what the model says."""

    source: str
    checkpoint_sha256: str | None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Weights:
        return cls(d["source"], d["checkpoint_sha256"])


@dataclass(frozen=True)
class Machine(_Record):
    """The converting machine."""

    system: str
    machine: str

    @classmethod
    def here(cls) -> Machine:
        return cls(platform.system(), platform.machine())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Machine:
        return cls(d["system"], d["machine"])


@dataclass(frozen=True)
class UnitInfo(_Record):
    """A deploy unit as PyTorch had it (artifacts record the same I/O as their runtime reads it back)."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...]
    image_inputs: tuple[str, ...]
    notes: dict[str, str]

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


@dataclass(frozen=True)
class ArtifactEntry(_Record):
    """One converted unit for one target, its path relative to the bundle. Exactly one of `parity` and
    `parity_note` is set (figures where the artifact ran here, else why it could not)."""

    target: str
    unit: str
    path: str
    precision: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    size_bytes: int
    sha256: str
    versions: dict[str, str]
    conversion_seconds: float
    parity: dict[str, OutputParity] | None
    parity_note: str | None
    min_sqnr_db: float | None
    facts: dict[str, Any]

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

    plan: str
    summary: dict[str, Any]
    metadata: dict[str, Any]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantUnit:
        return cls(d["plan"], dict(d["summary"]), dict(d["metadata"]))


@dataclass(frozen=True)
class QuantSection(_Record):
    """How a quantized bundle's numbers were made (absent from float bundles), so a run can be audited or
    replayed on a new checkpoint."""

    method: str
    bits: str
    budget_mb: float | None
    calibration: dict[str, Any]  # its source and how much of it was used
    skipped_targets: dict[str, str]  # targets asked for but not written, with the reason
    units: dict[str, QuantUnit]

    def to_dict(self) -> dict[str, Any]:
        return json_safe(super().to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantSection:
        units = {name: QuantUnit.from_dict(u) for name, u in d["units"].items()}
        return cls(d["method"], d["bits"], d["budget_mb"], dict(d["calibration"]), dict(d["skipped_targets"]), units)


@dataclass(frozen=True)
class Header:
    """What only the caller knows (this package never sees a model): the model, its weights, its deploy units."""

    model: ModelInfo
    weights: Weights
    units: tuple[UnitInfo, ...]


@dataclass(frozen=True)
class Manifest(_Record):
    """`manifest.json`: the contract between the converter and the apps/runners that load the artifacts."""

    schema: str
    schema_version: int
    created: str  # UTC, RFC 3339
    model: ModelInfo
    weights: Weights
    versions: dict[str, str]  # of the converting environment
    machine: Machine
    units: tuple[UnitInfo, ...]
    quant: QuantSection | None
    artifacts: tuple[ArtifactEntry, ...]

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
            tuple(artifacts),
        )

    def to_dict(self) -> dict[str, Any]:
        """The schema has no null quant section: a float bundle has none."""
        d = super().to_dict()
        if self.quant is None:
            del d["quant"]
        return d

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
            tuple(ArtifactEntry.from_dict(a) for a in d["artifacts"]),
        )
