"""What one conversion produced, in a form the bundle manifest can store and an app engineer can read.

An artifact records facts read back from the written file (names, shapes and dtypes as the runtime sees
them, not as PyTorch had them: LiteRT narrows int64 to int32, Core ML has no int64 at all), so the manifest
describes the file that ships rather than the module it came from.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as the artifact's runtime sees it; `dtype` is a numpy dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class OutputParity:
    """Artifact vs eager PyTorch for one output: SQNR in dB (inf when bit-equal) and max abs difference."""

    sqnr_db: float
    max_abs_diff: float

    def to_dict(self) -> dict[str, Any]:
        return {"sqnr_db": _json_float(self.sqnr_db), "max_abs_diff": _json_float(self.max_abs_diff)}


class TargetResult(TypedDict):
    """What a target's lowering reports about the file it wrote, read back from that file."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    facts: dict[str, Any]


@dataclass
class Artifact:
    """A converted deploy unit on disk plus everything a manifest needs to say about it.

    Exactly one of `parity` and `parity_note` is set: figures when the artifact could be run here, otherwise
    the reason it could not (e.g. Core ML prediction off macOS).
    """

    target: str
    unit: str
    path: Path
    precision: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    size_bytes: int
    sha256: str
    versions: dict[str, str]
    # Lowering, writing and validating the file (loading it back); parity is not included.
    conversion_seconds: float
    parity: dict[str, OutputParity] | None = None
    parity_note: str | None = None
    # The SQNR floor the parity figures were held to, so a reader knows what "passed" meant.
    min_sqnr_db: float | None = None
    # Backend-specific findings: ExecuTorch delegation report, Core ML MIL op/precision summary, op counts.
    facts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only; a non-finite SQNR is written as the string "inf"/"-inf"/"nan" because
        strict JSON parsers (Swift's JSONDecoder, Kotlin's) reject bare Infinity."""
        return {
            "target": self.target,
            "unit": self.unit,
            "path": str(self.path),
            "precision": self.precision,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "versions": dict(self.versions),
            "conversion_seconds": round(self.conversion_seconds, 3),
            "parity": None if self.parity is None else {k: v.to_dict() for k, v in self.parity.items()},
            "parity_note": self.parity_note,
            "min_sqnr_db": self.min_sqnr_db,
            "facts": self.facts,
        }


def _json_float(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def files_of(path: Path) -> list[Path]:
    """The files making up an artifact, in a stable order (a .mlpackage is a directory)."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path]


def size_and_sha256(path: Path) -> tuple[int, str]:
    """Size and digest of a file or directory artifact.

    For a directory the digest covers each file's relative path and content, so renaming a file inside a
    package changes the digest just as editing it does.
    """
    digest = hashlib.sha256()
    size = 0
    for f in files_of(path):
        if path.is_dir():
            digest.update(f.relative_to(path).as_posix().encode() + b"\0")
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    return size, digest.hexdigest()
