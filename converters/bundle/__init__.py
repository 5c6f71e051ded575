"""The bundle: a folder of artifacts plus `manifest.json`, the contract between the converters that make it and
the benchmark harness and apps that read it.

Readers need only the manifest (schema-versioned plain JSON, published as `bundle.v1.schema.json` beside this
file) and the files it names; this package never imports `edgevit` or model code. Its errors are `BundleError`
(one line each). `output` holds the lock/replace logic every output folder uses, bundles or not.
"""

from converters.bundle.errors import BundleError, quoted, safe_text
from converters.bundle.manifest import (
    MANIFEST,
    SCHEMA,
    SCHEMA_VERSION,
    ArtifactEntry,
    Header,
    Machine,
    Manifest,
    ModelInfo,
    PassEntry,
    QuantSection,
    QuantUnit,
    UnitInfo,
    Weights,
)
from converters.bundle.output import MARKER, atomic_dir, atomic_file, check_file_out, check_out, release_claims
from converters.bundle.reader import artifact_for, read_manifest, unit_runner, verify_artifact
from converters.bundle.validate import schema, validate
from converters.bundle.writer import write_bundle, write_manifest

__all__ = [
    "MANIFEST",
    "MARKER",
    "SCHEMA",
    "SCHEMA_VERSION",
    "ArtifactEntry",
    "BundleError",
    "Header",
    "Machine",
    "Manifest",
    "ModelInfo",
    "PassEntry",
    "QuantSection",
    "QuantUnit",
    "UnitInfo",
    "Weights",
    "artifact_for",
    "atomic_dir",
    "atomic_file",
    "check_file_out",
    "check_out",
    "quoted",
    "read_manifest",
    "release_claims",
    "safe_text",
    "schema",
    "unit_runner",
    "validate",
    "verify_artifact",
    "write_bundle",
    "write_manifest",
]
