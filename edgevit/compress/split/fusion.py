"""The fusion spec (`fusion.json` beside the device bundles) and the fusion of sub-model outputs into one prediction.

Each sub-model scores its own classes plus one "other" output: the probability that the image belongs to none
of its classes (distilled from the full model, see `submodel`). Sub-models are fused as a product of experts:
the fused log-score of class c, owned by device d, is

    log p_d(c) + sum over the other answering devices e of log p_e(other)

normalised over every class an answering device owns. A class wins when its owner is confident *and* every
other device says "not mine". A device that did not answer (dead, or past the deadline) contributes no factor
and its classes get probability 0, so the rest still give a proper distribution over their classes: the
prediction is flagged partial, naming the devices missing. ED-ViT itself fuses with a small MLP trained on the
concatenated sub-model outputs; an MLP needs every input, so it cannot answer when a device is gone.

The spec pins each bundle by the sha256 of its `manifest.json` (which pins every artifact's sha256), so a
bundle rebuilt or swapped after the split is refused instead of fused with the wrong classes. Numpy only: a
client needs neither torch nor model code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.errors import EdgevitError

SPEC_FILE = "fusion.json"
SCHEMA = "edgevit.split"
SCHEMA_VERSION = 1
METHOD = "product-of-experts"


@dataclass(frozen=True)
class DeviceEntry:
    """One device: its bundle (a folder beside the spec), the classes its sub-model scores (indices into the
    spec's `classes`, in its output order; one more output, last, is "other") and where it is served."""

    name: str
    bundle: str
    manifest_sha256: str
    classes: tuple[int, ...]
    memory_mb: float
    weights_bytes: int
    address: str | None = None


@dataclass(frozen=True)
class FusionSpec:
    classes: tuple[str, ...]
    devices: tuple[DeviceEntry, ...]
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    metrics: dict[str, Any] = field(default_factory=dict)
    method: str = METHOD

    def to_json(self) -> str:
        doc = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **asdict(self)}
        return json.dumps(doc, indent=2, allow_nan=False) + "\n"

    @classmethod
    def read(cls, path: Path) -> FusionSpec:
        """Read and check a spec file; every problem is one line naming the file."""
        path = Path(path)
        if path.is_dir():
            path = path / SPEC_FILE
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            spec = _from_doc(doc)
        except FileNotFoundError:
            raise EdgevitError(f"fusion spec {path} does not exist; make one with `edgevit split`") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise EdgevitError(f"cannot read fusion spec {path}: {exc}") from None
        except (KeyError, TypeError) as exc:
            raise EdgevitError(f"fusion spec {path} is malformed ({type(exc).__name__}: {exc}); split again") from None
        return spec

    def device(self, name: str) -> DeviceEntry:
        for entry in self.devices:
            if entry.name == name:
                return entry
        raise EdgevitError(f"the fusion spec has no device {name!r}; it has: {', '.join(d.name for d in self.devices)}")


def _require(condition: bool, problem: str) -> None:
    if not condition:
        raise ValueError(problem)


def _from_doc(doc: dict[str, Any]) -> FusionSpec:
    _require(doc["schema"] == SCHEMA, f"schema is {doc['schema']!r}, not {SCHEMA!r}")
    _require(doc["schema_version"] <= SCHEMA_VERSION, f"schema_version {doc['schema_version']} is newer than edgevit's")
    _require(doc["method"] == METHOD, f"unknown fusion method {doc['method']!r}")
    classes = tuple(str(c) for c in doc["classes"])
    devices = tuple(
        DeviceEntry(
            str(d["name"]),
            str(d["bundle"]),
            str(d["manifest_sha256"]),
            tuple(int(c) for c in d["classes"]),
            float(d["memory_mb"]),
            int(d["weights_bytes"]),
            None if d.get("address") is None else str(d["address"]),
        )
        for d in doc["devices"]
    )
    owned = sorted(c for d in devices for c in d.classes)
    _require(owned == list(range(len(classes))), "the devices' classes are not a partition of the spec's classes")
    return FusionSpec(
        classes,
        devices,
        tuple(doc["input_size"]),
        tuple(doc["mean"]),
        tuple(doc["std"]),
        dict(doc.get("metrics", {})),
    )


def manifest_sha256(bundle: Path) -> str:
    try:
        return hashlib.sha256((Path(bundle) / "manifest.json").read_bytes()).hexdigest()
    except FileNotFoundError:
        raise EdgevitError(f"{bundle} is not a bundle (no manifest.json); the split output is incomplete") from None


def check_bundle(entry: DeviceEntry, bundle: Path) -> None:
    """Refuse a bundle that is not the one the spec was written with (rebuilt, swapped, edited)."""
    found = manifest_sha256(bundle)
    if found != entry.manifest_sha256:
        raise EdgevitError(
            f"bundle {bundle} does not match the fusion spec (device {entry.name!r}: manifest sha256 {found[:12]}…, "
            f"the spec expects {entry.manifest_sha256[:12]}…); serve the bundles this split wrote, or split again"
        )


@dataclass(frozen=True)
class Prediction:
    """One fused prediction: the winning class, the probability of every class (0 for classes no answering
    device owns), and, when devices were missing, which and why."""

    label: int
    name: str
    probabilities: np.ndarray
    missing: dict[str, str]

    @property
    def partial(self) -> bool:
        return bool(self.missing)

    def to_dict(self, classes: Sequence[str]) -> dict[str, Any]:
        return {
            "label": self.label,
            "class": self.name,
            "probability": float(self.probabilities[self.label]),
            "partial": self.partial,
            "missing": self.missing,
            "probabilities": {c: round(float(p), 6) for c, p in zip(classes, self.probabilities, strict=True)},
        }


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def fuse_scores(spec: FusionSpec, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Fused probabilities `B x classes` from each answering device's `B x (own classes + 1)` logits."""
    if not outputs:
        raise EdgevitError("no device answered: nothing to fuse")
    logp = {name: log_softmax(out) for name, out in outputs.items()}
    batch = next(iter(logp.values())).shape[0]
    scores = np.full((batch, len(spec.classes)), -np.inf)
    others = sum(lp[:, -1] for lp in logp.values())
    for name, lp in logp.items():
        entry = spec.device(name)
        if lp.shape != (batch, len(entry.classes) + 1):
            raise EdgevitError(
                f"device {name!r} answered {lp.shape[1]} scores, the spec expects {len(entry.classes) + 1} "
                "(its classes + other); it serves another bundle"
            )
        scores[:, list(entry.classes)] = lp[:, :-1] + (others - lp[:, -1])[:, None]
    return np.exp(log_softmax(scores))


def fuse(spec: FusionSpec, outputs: Mapping[str, np.ndarray], missing: Mapping[str, str] | None = None) -> Prediction:
    """One frame's prediction from the devices that answered (`outputs`: name → `1 x (k+1)` logits)."""
    probabilities = fuse_scores(spec, outputs)[0]
    label = int(probabilities.argmax())
    return Prediction(label, spec.classes[label], probabilities, dict(missing or {}))
