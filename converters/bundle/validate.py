"""The validating half of the reader: a manifest is checked against the published JSON Schema and against itself.

The schema (`converters/bundle/bundle.v1.schema.json`) is the contract apps read too; this module adds what a
schema cannot say: names that must be unique or refer to each other, and input shapes that must agree with the
model's config. Every problem is one `BundleError` line naming the JSON path, with manifest text escaped so it
cannot drive the terminal.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from converters.bundle.errors import BundleError, problem, quoted, safe_text
from converters.bundle.manifest import MANIFEST, SCHEMA, SCHEMA_VERSION


@functools.cache
def schema() -> dict[str, Any]:
    """The published JSON Schema of the manifest version this package writes (shipped as package data)."""
    text = resources.files(__package__).joinpath(f"bundle.v{SCHEMA_VERSION}.schema.json").read_text("utf-8")
    return json.loads(text)


@functools.cache
def _validator():
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema())


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which of two equal keys wins; an app and this reader must see the same manifest.
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {safe_text(json.dumps(key))}")
        obj[key] = value
    return obj


def _reject_constant(name: str) -> None:
    raise ValueError(f'{name} is not valid in strict JSON (write "inf"/"nan" as strings)')


def parse(data: bytes, where: Path | str) -> Any:
    """Strict JSON from bytes: UTF-8, no NaN/Infinity, no duplicate keys, bounded nesting."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"{safe_text(str(where), 300)} is not UTF-8 text (byte {exc.start}); rewrite it") from None
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise BundleError(
            f"{safe_text(str(where), 300)} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    except ValueError as exc:
        raise BundleError(f"{safe_text(str(where), 300)} is not valid JSON ({exc})") from None
    except RecursionError:
        raise BundleError(f"{safe_text(str(where), 300)} is nested too deeply to be a manifest") from None


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _schema_message(error) -> str:
    custom = error.schema.get("errorMessage") if isinstance(error.schema, dict) else None
    if custom and error.validator == "pattern":
        return f"{quoted(error.instance)} {custom}"
    if error.validator == "type":
        wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        return f"expected {' or '.join(wanted)}, found {_json_type(error.instance)}"
    return safe_text(error.message, 200)  # jsonschema's own wording, which quotes the offending value


def validate(manifest: Any, where: Path | str = MANIFEST) -> dict[str, Any]:
    """The manifest if it is an edgevit bundle manifest this reader knows; else one line naming the problem.

    Version is checked before the schema so a newer bundle says "upgrade" rather than listing unknown keys.
    """
    if not isinstance(manifest, dict):
        raise problem(where, [], f"expected a JSON object, found {_json_type(manifest)}; is this an edgevit bundle?")
    if manifest.get("schema") != SCHEMA:
        got = quoted(manifest.get("schema"))
        raise problem(where, ["schema"], f"{got} is not {SCHEMA!r}: not an edgevit bundle manifest")
    version = manifest.get("schema_version")
    if type(version) is not int or version < 1:
        raise problem(where, ["schema_version"], f"{quoted(version)} is not a positive integer")
    if version > SCHEMA_VERSION:
        raise problem(
            where,
            ["schema_version"],
            f"bundle schema {version} is newer than this edgevit reads ({SCHEMA_VERSION}); upgrade edgevit",
        )
    from jsonschema.exceptions import best_match

    error = best_match(_validator().iter_errors(manifest))
    if error is not None:
        raise problem(where, error.absolute_path, _schema_message(error))
    check_consistency(manifest, where)
    return manifest


def _unique(names: list[Any], what: str, where: Path | str, path: list[str | int]) -> None:
    seen = set()
    for i, name in enumerate(names):
        if name in seen:
            raise problem(where, [*path, i], f"{what} {quoted(name)} appears twice")
        seen.add(name)


def check_consistency(manifest: dict[str, Any], where: Path | str = MANIFEST) -> None:
    """What the schema cannot say: unique names, artifacts of declared units whose inputs are the unit's, and
    shapes that follow the model's input size and config (a tampered config must not drive a tracker)."""
    units = {u["name"]: u for u in manifest["units"]}
    _unique([u["name"] for u in manifest["units"]], "unit", where, ["units"])
    arts = manifest["artifacts"]
    _unique([(a["unit"], a["target"]) for a in arts], "unit and target", where, ["artifacts"])
    _unique([a["path"] for a in arts], "path", where, ["artifacts"])
    for i, art in enumerate(arts):
        unit = units.get(art["unit"])
        if unit is None:
            raise problem(where, ["artifacts", i, "unit"], f"{quoted(art['unit'])} is not one of the units")
        if len(art["inputs"]) != len(unit["inputs"]) or len(art["outputs"]) != len(unit["outputs"]):
            raise problem(where, ["artifacts", i], f"its inputs/outputs do not match unit {quoted(art['unit'])}")
        for j, (got, want) in enumerate(zip(art["inputs"], unit["inputs"], strict=True)):
            if not _same_shape(got["shape"], want["shape"]):
                raise problem(
                    where,
                    ["artifacts", i, "inputs", j, "shape"],
                    f"{got['shape']} but unit {quoted(art['unit'])} takes {want['shape']}",
                )
    for name in manifest.get("quant", {}).get("units", {}):
        if name not in units:
            raise problem(where, ["quant", "units", name], "is not one of the units")
    for path, shape, want, source in _expected_shapes(manifest):
        if not _same_shape(shape, want):
            raise problem(
                where, path, f"{shape} does not match {source} (expected {want}); the manifest contradicts itself"
            )


def _same_shape(got: list[int], want: list[int]) -> bool:
    return len(got) == len(want) and all(g == w or -1 in (g, w) for g, w in zip(got, want, strict=True))


def _expected_shapes(manifest: dict[str, Any]) -> Iterable[tuple[list[str | int], list[int], list[int], str]]:
    """(JSON path, shape, the shape the manifest's own figures call for, which figures) of every unit input
    they fix.

    Image inputs (named `image` or listed in `image_inputs`) are [1, 3, H, W] with input_size [H, W]; for
    EfficientTAM, the config's image size and capacities (memory slots, object pointers, prompt slots) fix
    the shapes the video loop fills.
    """
    model = manifest["model"]
    h, w = model["input_size"]
    expected: dict[tuple[str, str], tuple[list[int], str]] = {}
    for unit in manifest["units"]:
        for name in {"image", *unit["image_inputs"]}:
            expected[unit["name"], name] = [1, 3, h, w], f"model.input_size {[h, w]}"
    cfg = model["config"]
    if model["name"] == "efficienttam" and cfg is not None:
        s, d, m, p = cfg["image_size"], cfg["d_model"], cfg["num_maskmem"], cfg["max_points"]
        f = s // cfg["patch_size"]
        size = f"model.config image_size {s}, patch_size {cfg['patch_size']}"
        features = [1, d, f, f], f"{size}, d_model {d}"
        expected |= {
            ("image_encoder", "image"): ([1, 3, s, s], size),
            ("memory_attention", "features"): features,
            ("memory_attention", "memory"): ([m, cfg["mem_dim"], f, f], f"{size}, num_maskmem {m}, mem_dim"),
            ("memory_attention", "memory_valid"): ([m], f"model.config.num_maskmem {m}"),
            ("memory_attention", "obj_ptrs"): ([cfg["max_obj_ptrs"], d], "model.config max_obj_ptrs, d_model"),
            ("memory_attention", "ptr_valid"): ([cfg["max_obj_ptrs"]], "model.config.max_obj_ptrs"),
            ("prompt_mask_decoder", "features"): features,
            ("prompt_mask_decoder", "point_coords"): ([1, p, 2], f"model.config.max_points {p}"),
            ("prompt_mask_decoder", "point_labels"): ([1, p], f"model.config.max_points {p}"),
            ("prompt_mask_decoder", "mask_prompt"): ([1, 1, s, s], size),
            ("memory_encoder", "features"): features,
            ("memory_encoder", "mask_logits"): ([1, 1, 4 * f, 4 * f], size),
        }
        if [s, s] != [h, w]:
            yield ["model", "input_size"], [h, w], [s, s], f"model.config.image_size {s}"
    for i, unit in enumerate(manifest["units"]):
        for j, spec in enumerate(unit["inputs"]):
            want = expected.get((unit["name"], spec["name"]))
            if want is not None:
                yield ["units", i, "inputs", j, "shape"], spec["shape"], *want
