"""A bundle is untrusted input: its manifest is checked against the published JSON Schema and against itself,
and an artifact's path, size and sha256 are checked before any runtime opens it.

The schema (`edgevit/schemas/bundle.v1.schema.json`) is the contract apps read too; this module adds what a
schema cannot say: names that must be unique or refer to each other, input shapes that must agree with the
model's config, and files that must lie inside the bundle and be the bytes that were converted. Every problem
is one `EdgevitError` line naming the JSON path, with manifest text escaped so it cannot drive the terminal.
"""

from __future__ import annotations

import functools
import json
import os
import unicodedata
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from converters.artifact import size_and_sha256
from edgevit.errors import EdgevitError

SCHEMA = "edgevit.bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
# Real manifests are tens of kB; a cap keeps a hostile file from filling memory before it is even parsed.
MAX_MANIFEST_BYTES = 16 * 2**20
_SHOWN_CHARS = 120


def safe_text(value: Any, limit: int = _SHOWN_CHARS) -> str:
    """`value` as one printable line: control and format characters (ANSI escapes, newlines, bidi overrides)
    become visible `\\x..` escapes and long text is cut, so a manifest cannot move the cursor or add lines."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    return "".join(
        (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")
        else c
        for c in text
    )


class Label(str):
    """A JSON path segment written as it is, e.g. `artifacts[image_encoder/onnx]` when the index is unknown."""


def json_path(parts: Iterable[str | int]) -> str:
    """`artifacts[2].sha256` from ("artifacts", 2, "sha256"); odd keys are quoted."""
    out = ""
    for part in parts:
        if isinstance(part, Label):
            out += part
        elif isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier():
            out += f".{part}" if out else part
        else:
            out += f"[{safe_text(json.dumps(part))}]"
    return out or "(top level)"


class ManifestError(EdgevitError):
    """A manifest or one of its artifacts is not what an edgevit bundle holds."""


def _fail(where: Path | str, path: Iterable[str | int], problem: str) -> ManifestError:
    return ManifestError(f"{safe_text(str(where), 300)}: {json_path(path)}: {problem}")


@functools.cache
def schema() -> dict[str, Any]:
    """The published JSON Schema of this edgevit's manifest version (shipped as package data)."""
    text = resources.files("edgevit.schemas").joinpath(f"bundle.v{SCHEMA_VERSION}.schema.json").read_text("utf-8")
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
        raise ManifestError(f"{safe_text(str(where), 300)} is not UTF-8 text (byte {exc.start}); rewrite it") from None
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ManifestError(
            f"{safe_text(str(where), 300)} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    except ValueError as exc:
        raise ManifestError(f"{safe_text(str(where), 300)} is not valid JSON ({exc})") from None
    except RecursionError:
        raise ManifestError(f"{safe_text(str(where), 300)} is nested too deeply to be a manifest") from None


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def quoted(value: Any) -> str:
    """Manifest text inside a message: quoted, escaped, cut."""
    return f"'{safe_text(value)}'" if isinstance(value, str) else safe_text(value)


def _schema_message(error) -> str:
    custom = error.schema.get("errorMessage") if isinstance(error.schema, dict) else None
    if custom and error.validator == "pattern":
        return f"{quoted(error.instance)} {custom}"
    if error.validator == "type":
        wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        return f"expected {' or '.join(wanted)}, found {_json_type(error.instance)}"
    return safe_text(error.message, 200)  # jsonschema's own wording, which quotes the offending value


def validate(manifest: Any, where: Path | str = MANIFEST) -> dict[str, Any]:
    """The manifest if it is an edgevit bundle manifest this edgevit can read; else one line naming the problem.

    Version is checked before the schema so a newer bundle says "upgrade" rather than listing unknown keys.
    """
    if not isinstance(manifest, dict):
        raise _fail(where, [], f"expected a JSON object, found {_json_type(manifest)}; is this an edgevit bundle?")
    if manifest.get("schema") != SCHEMA:
        got = quoted(manifest.get("schema"))
        raise _fail(where, ["schema"], f"{got} is not {SCHEMA!r}: not an edgevit bundle manifest")
    version = manifest.get("schema_version")
    if type(version) is not int or version < 1:
        raise _fail(where, ["schema_version"], f"{quoted(version)} is not a positive integer")
    if version > SCHEMA_VERSION:
        raise _fail(
            where,
            ["schema_version"],
            f"bundle schema {version} is newer than this edgevit reads ({SCHEMA_VERSION}); upgrade edgevit",
        )
    from jsonschema.exceptions import best_match

    error = best_match(_validator().iter_errors(manifest))
    if error is not None:
        raise _fail(where, error.absolute_path, _schema_message(error))
    check_consistency(manifest, where)
    return manifest


def _unique(names: list[Any], what: str, where: Path | str, path: list[str | int]) -> None:
    seen = set()
    for i, name in enumerate(names):
        if name in seen:
            raise _fail(where, [*path, i], f"{what} {quoted(name)} appears twice")
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
            raise _fail(where, ["artifacts", i, "unit"], f"{quoted(art['unit'])} is not one of the units")
        if len(art["inputs"]) != len(unit["inputs"]) or len(art["outputs"]) != len(unit["outputs"]):
            raise _fail(where, ["artifacts", i], f"its inputs/outputs do not match unit {quoted(art['unit'])}")
        for j, (got, want) in enumerate(zip(art["inputs"], unit["inputs"], strict=True)):
            if not _same_shape(got["shape"], want["shape"]):
                raise _fail(
                    where,
                    ["artifacts", i, "inputs", j, "shape"],
                    f"{got['shape']} but unit {quoted(art['unit'])} takes {want['shape']}",
                )
    for name in manifest.get("quant", {}).get("units", {}):
        if name not in units:
            raise _fail(where, ["quant", "units", name], "is not one of the units")
    for path, shape, want, source in _expected_shapes(manifest):
        if not _same_shape(shape, want):
            raise _fail(
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


def read(bundle: Path) -> dict[str, Any]:
    """Read, parse and validate `bundle/manifest.json`, then check every file it names lies inside the bundle,
    exists and has the recorded size (cheap; the sha256 is checked by `verify_artifact`)."""
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        raise ManifestError(
            f"{safe_text(str(bundle), 300)} is not a bundle (no manifest.json); make one with `edgevit convert`"
        )
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{safe_text(str(path), 300)} is {size} bytes, too large for a manifest")
    manifest = validate(parse(path.read_bytes(), path), path)
    for i, art in enumerate(manifest["artifacts"]):
        check_size(bundle, art, ["artifacts", i])
    for name, entry in manifest.get("quant", {}).get("units", {}).items():
        plan = inside(bundle, entry["plan"], ["quant", "units", name, "plan"])
        if not plan.is_file():
            raise _fail(path, ["quant", "units", name, "plan"], f"{quoted(entry['plan'])} does not exist")
    return manifest


def inside(bundle: Path, relpath: str, where: list[str | int]) -> Path:
    """`bundle/relpath`, refusing anything that resolves outside the bundle (absolute, `..`, symlinks out)."""
    manifest = Path(bundle) / MANIFEST
    path = Path(bundle) / relpath
    try:
        root = Path(bundle).resolve()
        if Path(relpath).is_absolute() or ".." in Path(relpath).parts or not path.resolve().is_relative_to(root):
            raise _fail(manifest, where, f"{quoted(relpath)} points outside the bundle")
        if path.is_dir():  # a package (.mlpackage): none of its entries may lead out either
            for dirpath, dirnames, filenames in os.walk(path):
                for entry in [*dirnames, *filenames]:
                    if not (Path(dirpath) / entry).resolve().is_relative_to(root):
                        raise _fail(manifest, where, f"{quoted(relpath)} links outside the bundle")
    except (OSError, RuntimeError) as exc:  # a symlink loop, a permission problem
        raise _fail(manifest, where, f"{quoted(relpath)} cannot be resolved ({safe_text(str(exc))})") from None
    return path


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def check_size(bundle: Path, art: dict[str, Any], where: list[str | int]) -> Path:
    """The artifact's path inside the bundle, after checking it exists and has the recorded size."""
    path = inside(bundle, art["path"], [*where, "path"])
    manifest = Path(bundle) / MANIFEST
    if not path.exists():
        raise _fail(manifest, [*where, "path"], f"{quoted(art['path'])} does not exist; the bundle is incomplete")
    size = sum(f.stat().st_size for f in _files(path))
    if size != art["size_bytes"]:
        raise _fail(
            manifest,
            [*where, "size_bytes"],
            f"{quoted(art['path'])} is {size} bytes, the manifest says {art['size_bytes']}: "
            "the file was changed after conversion; convert again",
        )
    return path


@functools.cache
def _digest(path: Path, stamp: tuple[tuple[str, int, int, int], ...]) -> str:
    """sha256 of a file or package, once per process for the same bytes on disk (`stamp` changes if they do)."""
    return size_and_sha256(path)[1]


def _stamp(path: Path) -> tuple[tuple[str, int, int, int], ...]:
    return tuple((str(f), (s := f.stat()).st_size, s.st_mtime_ns, s.st_ino) for f in _files(path))


def verify_artifact(bundle: Path, art: dict[str, Any], index: int | None = None) -> Path:
    """The artifact's path once its size and sha256 match the manifest (streamed, hashed once per process)."""
    where: list[str | int] = (
        ["artifacts", index] if index is not None else [Label(f"artifacts[{safe_text(art['unit'])}/{art['target']}]")]
    )
    path = check_size(bundle, art, where)
    resolved = path.resolve()
    if _digest(resolved, _stamp(resolved)) != art["sha256"]:
        raise _fail(
            Path(bundle) / MANIFEST,
            [*where, "sha256"],
            f"{quoted(art['path'])} does not match its sha256: the file was changed after conversion; convert again",
        )
    return path
