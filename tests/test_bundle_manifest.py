"""The published JSON Schema is what the generator makes of the manifest dataclasses, and the one writer writes what
the reader accepts: strict JSON (non-finite floats as strings), validated, renamed into place whole or not at all."""

from __future__ import annotations

import dataclasses
import json
import math
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import jsonschema
import pytest

from converters.artifact import Artifact, OutputParity, TensorSpec, size_and_sha256
from converters.bundle import (
    MARKER,
    ArtifactEntry,
    BundleError,
    Header,
    Machine,
    Manifest,
    ModelInfo,
    PassEntry,
    QuantSection,
    QuantUnit,
    UnitInfo,
    Weights,
    read_manifest,
    schema,
    validate,
    verify_artifact,
    write_bundle,
    write_manifest,
)
from converters.bundle.schema_gen import SchemaBuilder, render
from converters.bundle.schema_types import EfficientTAMConfig, Keywords, about

# The $defs name of every closed object below the root (the root is Manifest).
DEFS = {
    ModelInfo: "model",
    EfficientTAMConfig: "efficienttam_config",
    Weights: "weights",
    Machine: "machine",
    UnitInfo: "unit",
    TensorSpec: "tensor",
    ArtifactEntry: "artifact",
    OutputParity: "output_parity",
    QuantSection: "quant",
    QuantUnit: "quant_unit",
    PassEntry: "pass",
}
# Properties a manifest may lack: the quant section (float bundles), the passes (bundles made without any) and the
# model's loop (older bundles).
# efficient_memory came later: bundles written before it (full memory attention) still read
OPTIONAL = {Manifest: ["quant", "passes"], ModelInfo: ["loop"], EfficientTAMConfig: ["efficient_memory"]}


def test_the_published_schema_is_the_generators_output():
    published = resources.files("converters.bundle").joinpath("bundle.v1.schema.json").read_bytes()
    assert published == render().encode(), "run `python -m converters.bundle.schema_gen` and commit the schema"
    jsonschema.Draft202012Validator.check_schema(json.loads(published))


def closed_objects(node: object, pointer: str = "") -> set[str]:
    found = set()
    if isinstance(node, dict):
        if node.get("additionalProperties") is False:
            found.add(pointer)
        for key, value in node.items():
            found |= closed_objects(value, f"{pointer}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found |= closed_objects(value, f"{pointer}/{i}")
    return found


def test_every_closed_schema_object_is_a_dataclass():
    assert closed_objects(schema()) == {""} | {f"/$defs/{name}" for name in DEFS.values()}


@pytest.mark.parametrize("cls", [Manifest, *DEFS], ids=lambda cls: cls.__name__)
def test_each_dataclass_is_a_closed_object_of_its_fields_in_order(cls):
    node = schema() if cls is Manifest else schema()["$defs"][DEFS[cls]]
    names = [f.name for f in dataclasses.fields(cls)]
    assert node["additionalProperties"] is False and list(node["properties"]) == names
    assert [n for n in names if n not in node["required"]] == OPTIONAL.get(cls, [])


Tag = Annotated[str, Keywords({"$def": "tag", "maxLength": 8})]


@dataclasses.dataclass(frozen=True)
class ToyInner:
    tag: Tag


@dataclasses.dataclass(frozen=True)
class ToyOuter:
    __schema__: ClassVar[dict[str, Any]] = {"$def": "outer", "not": {"required": ["inner", "count"]}}

    inner: ToyInner | None = about(absent_if_none=True)
    count: int | None
    tags: dict[Literal["a", "b"], Tag] = about("Tags by letter.", minProperties=1)
    pair: tuple[Annotated[int, Keywords(minimum=0)], str]
    sizes: list[float]
    extra: dict[str, Any] | None
    mode: Literal["x"] = about(default="x")


def test_annotations_and_their_metadata_become_closed_objects_and_refs():
    builder = SchemaBuilder()
    assert builder.dataclass(ToyOuter) == "outer"
    tag = {"$ref": "#/$defs/tag"}
    assert builder.defs == {
        "tag": {"type": "string", "maxLength": 8},
        "toy_inner": {"type": "object", "required": ["tag"], "additionalProperties": False, "properties": {"tag": tag}},
        "outer": {
            "type": "object",
            "required": ["count", "tags", "pair", "sizes", "extra"],
            "additionalProperties": False,
            "properties": {
                "inner": {"$ref": "#/$defs/toy_inner"},  # written by omission: no null
                "count": {"type": ["integer", "null"]},
                "tags": {
                    "description": "Tags by letter.",
                    "type": "object",
                    "propertyNames": {"enum": ["a", "b"]},
                    "additionalProperties": tag,
                    "minProperties": 1,
                },
                "pair": {
                    "type": "array",
                    "prefixItems": [{"type": "integer", "minimum": 0}, {"type": "string"}],
                    "minItems": 2,
                    "maxItems": 2,
                },
                "sizes": {"type": "array", "items": {"type": "number"}},
                "extra": {"type": ["object", "null"]},
                "mode": {"const": "x"},
            },
            "not": {"required": ["inner", "count"]},
        },
    }


def tiny_header() -> Header:
    image = TensorSpec("image", (1, 3, 8, 8), "float32")
    model = ModelInfo("vit", "tiny", (8, 8), "classification", (0.5,) * 3, (0.25,) * 3, "NCHW, RGB", None)
    unit = UnitInfo("model", (image,), ("logits",), ("image",), {"image": "RGB in [0, 1]"})
    return Header(model, Weights("random", None), (unit,))


def tiny_artifact(folder: Path, seconds: float = 0.5) -> Artifact:
    """A file as a converter leaves it in `folder/onnx/`, described as `converters.convert` describes one."""
    path = folder / "onnx" / "model.fp32.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"onnx bytes")
    size, sha256 = size_and_sha256(path)
    image, logits = TensorSpec("image", (1, 3, 8, 8), "float32"), TensorSpec("logits", (1, 10), "float32")
    parity = {"logits": OutputParity(math.inf, 0.0)}  # bit-equal: the SQNR is infinite
    return Artifact("onnx", "model", path, "fp32", (image,), (logits,), size, sha256, {"onnx": "1"}, seconds, parity)


QUANT = QuantSection(
    method="ptq",
    bits="8",
    budget_mb=None,
    calibration={"source": "builtin", "images": 4},
    skipped_targets={"coreml": "holds 4/8-bit weights"},
    units={"model": QuantUnit("quant/model.plan.json", {"layers": 2}, {"worst_sqnr_db": math.nan})},
)


def test_one_writer_writes_a_quantized_bundle_the_reader_and_the_published_schema_accept(tmp_path):
    out = tmp_path / "bundle"
    files = {"quant/model.plan.json": '{"layers": {}}\n'}
    manifest = write_bundle(out, tiny_header(), lambda folder: [tiny_artifact(folder)], quant=QUANT, files=files)
    assert read_manifest(out) == manifest
    published = json.loads(resources.files("converters.bundle").joinpath("bundle.v1.schema.json").read_text())
    jsonschema.validate(json.loads((out / "manifest.json").read_text()), published)
    (art,) = manifest["artifacts"]
    assert art["path"] == "onnx/model.fp32.onnx" and art["parity"]["logits"]["sqnr_db"] == "inf"
    assert manifest["quant"]["units"]["model"]["metadata"] == {"worst_sqnr_db": "nan"}  # strict JSON
    assert list(manifest)[-2:] == ["quant", "artifacts"]
    assert verify_artifact(out, art) == out / "onnx" / "model.fp32.onnx"
    assert Manifest.from_dict(manifest).to_dict() == manifest
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "manifest.json", "onnx", "quant"]


def test_a_float_bundle_has_no_quant_section(tmp_path):
    manifest = write_bundle(tmp_path / "b", tiny_header(), lambda folder: [tiny_artifact(folder)])
    assert "quant" not in manifest and Manifest.from_dict(manifest).quant is None
    assert "passes" not in manifest and Manifest.from_dict(manifest).passes is None


def test_passes_are_recorded_in_order_with_their_open_info(tmp_path):
    passes = (PassEntry("prune", {"budget": 0.3, "sqnr_db": math.inf}), PassEntry("quant", {"bits": "8"}))
    header = dataclasses.replace(tiny_header(), passes=passes)
    manifest = write_bundle(tmp_path / "b", header, lambda folder: [tiny_artifact(folder)])
    assert read_manifest(tmp_path / "b") == manifest
    assert manifest["passes"] == [
        {"kind": "prune", "info": {"budget": 0.3, "sqnr_db": "inf"}},  # strict JSON inside the open info too
        {"kind": "quant", "info": {"bits": "8"}},
    ]
    assert Manifest.from_dict(manifest).to_dict() == manifest
    bad = dict(manifest, passes=[{"kind": "prune"}])
    with pytest.raises(BundleError, match="info"):
        validate(bad, "manifest.json")


def test_nan_outside_an_open_section_is_refused_and_nothing_is_written(tmp_path):
    entry = ArtifactEntry.from_artifact(tiny_artifact(tmp_path, seconds=math.nan), tmp_path)
    with pytest.raises(ValueError, match="not JSON compliant"):
        write_manifest(tmp_path, Manifest.new(tiny_header(), [entry]))
    assert not (tmp_path / "manifest.json").exists()


def test_a_failing_lower_leaves_nothing(tmp_path):
    def lower(folder: Path):
        yield tiny_artifact(folder)
        raise BundleError("the second target failed")

    with pytest.raises(BundleError, match="second target failed"):
        write_bundle(tmp_path / "b", tiny_header(), lower, quant=QUANT, files={"quant/model.plan.json": "{}\n"})
    assert list(tmp_path.iterdir()) == []
