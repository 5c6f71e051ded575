"""A bundle is untrusted input: every malformed manifest or artifact is one stderr line and exit 2 for
`inspect`, `inspect --verify` and `track --bundle`, and nothing is written or changed; text from a manifest
never drives the terminal; written manifests follow the published schema."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
import torch

from converters.bundle import BundleError, Manifest, read_manifest, schema, write_manifest
from edgevit.bundle import write_bundle
from edgevit.models import create
from tests.test_cli import run  # given capfd, a runtime's C++ logging on stderr counts too


@pytest.fixture(scope="module")
def etam_bundle(tmp_path_factory) -> Path:
    """EfficientTAM-Ti cut to 2 trunk blocks, 1 memory-attention layer and a 64 px input: the four units with
    their real I/O (and config capacities) at ~13 s of conversion, onnx only."""
    torch.manual_seed(0)
    model = create("efficienttam_ti", image_size=64, depth=2, window_block_indexes=(0,), memory_attention_layers=1)
    out = tmp_path_factory.mktemp("etam") / "bundle"
    write_bundle(model, ("onnx",), None, out)
    return out


@pytest.fixture(scope="module")
def vit_bundle(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("vit") / "bundle"
    write_bundle(create("vit_ti16_224", depth=2, img_size=64, num_classes=10), ("onnx",), None, out)
    return out


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every entry under `root` (links not followed) with its size and content digest."""
    state = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            state[str(p)] = (-1, str(p.readlink()))
        elif p.is_file():
            state[str(p)] = (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        else:
            state[str(p)] = (0, "dir")
    return state


def edit(fn: Callable[[dict], object]) -> Callable[[Path], None]:
    """A mutation that rewrites manifest.json after `fn` changed the parsed manifest (or returned a new one)."""

    def apply(bundle: Path) -> None:
        manifest = json.loads((bundle / "manifest.json").read_text())
        result = fn(manifest)
        (bundle / "manifest.json").write_text(json.dumps(manifest if result is None else result))

    return apply


def write_raw(data: bytes) -> Callable[[Path], None]:
    return lambda bundle: (bundle / "manifest.json").write_bytes(data)


def first_artifact(bundle: Path) -> Path:
    return bundle / json.loads((bundle / "manifest.json").read_text())["artifacts"][0]["path"]


def flip_byte(bundle: Path) -> None:
    path = first_artifact(bundle)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def append_byte(bundle: Path) -> None:
    with first_artifact(bundle).open("ab") as fh:
        fh.write(b"\0")


def symlink_out(bundle: Path) -> None:
    path = first_artifact(bundle)
    outside = bundle.parent / "outside.onnx"
    shutil.copy(path, outside)  # the very bytes the manifest names: only where they live is wrong
    path.unlink()
    path.symlink_to(outside)


def set_key(path: str, value: object) -> Callable[[dict], None]:
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]

    def fn(manifest: dict) -> None:
        node = manifest
        for p in parents:
            node = node[p]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value

    return fn


# (id, mutation, what the one stderr line says, whether plain `inspect` (no hashing) must catch it too)
CASES = [
    ("list", edit(lambda m: [m]), "manifest.json: (top level): expected a JSON object, found an array", True),
    ("missing_key", edit(set_key("artifacts.0.sha256", KeyError)), "artifacts[0]: 'sha256' is a required", True),
    ("wrong_type", edit(set_key("artifacts.1.size_bytes", "big")), "artifacts[1].size_bytes: expected integer", True),
    ("bad_sha", edit(set_key("artifacts.2.sha256", "xyz")), "artifacts[2].sha256: 'xyz' must be a sha256", True),
    ("not_utf8", write_raw(b'{"schema": "edgevit.bundle\xff\xfe"}'), "is not UTF-8 text (byte 26)", True),
    ("bad_json", write_raw(b'{"schema": '), "is not valid JSON (Expecting value at line 1", True),
    ("nan", write_raw(b'{"schema": NaN}'), "NaN is not valid in strict JSON", True),
    ("dup_key", write_raw(b'{"schema": "edgevit.bundle", "schema": "x"}'), 'duplicate key "schema"', True),
    ("not_edgevit", edit(set_key("schema", "other.thing")), "schema: 'other.thing' is not 'edgevit.bundle'", True),
    ("newer", edit(set_key("schema_version", 2)), "schema_version: bundle schema 2 is newer than this edgevit", True),
    ("abs_path", edit(set_key("artifacts.0.path", "/etc/passwd")), "'/etc/passwd' must be a relative path", True),
    ("dotdot", edit(set_key("artifacts.0.path", "../../x.onnx")), "'../../x.onnx' must be a relative path", True),
    ("symlink_out", symlink_out, "artifacts[0].path: 'onnx/image_encoder.fp32.onnx' points outside the bundle", True),
    ("extra_key", edit(set_key("evil", 1)), "Additional properties are not allowed ('evil' was unexpected)", True),
    ("ansi_name", edit(set_key("units.0.name", "\x1b[2Jimage_encoder")), "'\\x1b[2Jimage_encoder' must be", True),
    ("unknown_unit", edit(set_key("artifacts.0.unit", "ghost")), "artifacts[0].unit: 'ghost' is not one of the", True),
    ("dup_target", edit(set_key("artifacts.1.unit", "image_encoder")), "('image_encoder', 'onnx') appears twice", True),
    (
        "config_capacity",
        edit(set_key("model.config.max_points", 4)),
        "[1, 8, 2] does not match model.config.max_points 4",
        True,
    ),
    (
        "config_size",
        edit(set_key("model.config.image_size", 128)),
        "[64, 64] does not match model.config.image_size 128",
        True,
    ),
    ("art_shape", edit(set_key("artifacts.1.inputs.1.shape", [7, 64, 2, 2])), "artifacts[1].inputs[1].shape: [7", True),
    ("config_type", edit(set_key("model.config.image_size", "64")), "model.config.image_size: expected integer", True),
    ("huge", write_raw(b" " * (17 << 20)), "bytes, too large for a manifest", True),
    ("missing_file", lambda b: first_artifact(b).unlink(), "'onnx/image_encoder.fp32.onnx' does not exist", True),
    ("size_tamper", append_byte, "artifacts[0].size_bytes: 'onnx/image_encoder.fp32.onnx' is", True),
    ("hash_tamper", flip_byte, "artifacts[0].sha256: 'onnx/image_encoder.fp32.onnx' does not match its sha256", False),
]
COMMANDS = {
    "inspect": lambda b, out: ["inspect", str(b)],
    "inspect_verify": lambda b, out: ["inspect", str(b), "--verify"],
    "track": lambda b, out: (
        ["track", "sample:bikes", "--point", "60,60", "--bundle", str(b), "--target", "onnx"]
        + ["--max-frames", "2", "--out", str(out)]
    ),
}


# Plain `inspect` checks paths and sizes but hashes nothing (that is `--verify`), so it meets only the cheap cases.
PARAMS = [
    pytest.param(command, mutate, message, id=f"{name}-{command}")
    for name, mutate, message, cheap in CASES
    for command in COMMANDS
    if cheap or command != "inspect"
]


@pytest.mark.parametrize(("command", "mutate", "message"), PARAMS)
def test_bad_bundle_is_one_line_exit_2_and_nothing_changes(
    etam_bundle, tmp_path, monkeypatch, capfd, command, mutate, message
):
    bundle = tmp_path / "bundle"
    shutil.copytree(etam_bundle, bundle)
    mutate(bundle)
    before = snapshot(tmp_path)
    code, out, err = run(monkeypatch, capfd, *COMMANDS[command](bundle, tmp_path / "masks"))
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert "\x1b" not in err and out == ""
    assert snapshot(tmp_path) == before


def test_track_refuses_a_bundle_of_another_model(vit_bundle, tmp_path, monkeypatch, capfd):
    before = snapshot(vit_bundle.parent)
    code, out, err = run(monkeypatch, capfd, *COMMANDS["track"](vit_bundle, tmp_path / "masks"))
    assert code == 2 and err.count("\n") == 1 and out == ""
    assert err.startswith("error: bundle ") and "holds 'vit', which does not track video" in err
    assert snapshot(vit_bundle.parent) == before and list(tmp_path.iterdir()) == []


def test_track_asks_to_reconvert_a_bundle_without_a_declared_loop(etam_bundle, tmp_path, monkeypatch, capfd):
    """EfficientTAM bundles written before the spec declared `model.loop` are refused with the fix, not called
    a model that does not track video."""
    old = tmp_path / "old"
    shutil.copytree(etam_bundle, old, symlinks=True)
    edit(lambda m: m["model"].__delitem__("loop"))(old)
    before = snapshot(tmp_path)
    code, out, err = run(monkeypatch, capfd, *COMMANDS["track"](old, tmp_path / "masks"))
    assert code == 2 and err.count("\n") == 1 and out == "", err
    assert "does not say whether its model tracks video" in err and "convert it again" in err
    assert snapshot(tmp_path) == before


def test_valid_bundle_passes_verify(etam_bundle, monkeypatch, capfd):
    from converters.bundle.reader import _digest

    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = run(monkeypatch, capfd, "inspect", str(etam_bundle), "--verify")
    assert (code, err) == (0, "")
    rows = [line for line in out.splitlines() if " onnx " in line]
    assert len(rows) == 4 and all(line.rstrip(" │").endswith(" ok") for line in rows), out
    hashed = _digest.cache_info().misses
    code, out, err = run(monkeypatch, capfd, "inspect", str(etam_bundle), "--verify", "--json")
    assert (code, err) == (0, "") and json.loads(out) == read_manifest(etam_bundle)
    assert _digest.cache_info().misses == hashed  # each file is hashed once per process


def test_manifest_text_prints_literally(vit_bundle, tmp_path, monkeypatch, capfd):
    """Rich markup in names prints as written; control characters in free text show as escapes."""
    bundle = tmp_path / "bundle"
    shutil.copytree(vit_bundle, bundle)
    name = "[red]evil[/red] [link=https://example.com]click[/link]"
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["model"]["name"] = name
    manifest["weights"]["source"] = "\x1b]8;;https://example.com\x07random\x1b[2J"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("COLUMNS", "300")
    code, out, err = run(monkeypatch, capfd, "inspect", str(bundle), "--verify")
    assert (code, err) == (0, "")
    assert name in out and "\\x1b]8;;https://example.com\\x07random\\x1b[2J weights" in out
    assert "\x1b" not in out and "\x07" not in out


def test_unchecked_artifacts_warn_when_run(etam_bundle, tmp_path, capfd):
    """Artifacts with no parity figures (Core ML off macOS) are named in one warning line when they run."""
    from edgevit.video.assemble import bundle_tracker

    bundle = tmp_path / "bundle"
    shutil.copytree(etam_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for art in manifest["artifacts"][:2]:
        art["parity"], art["parity_note"] = None, "checked on another machine"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    bundle_tracker(bundle, "onnx", num_threads=1)
    err = capfd.readouterr().err
    assert err == (
        "warning: running artifacts never parity-checked against PyTorch: image_encoder/onnx, memory_attention/onnx\n"
    )


def test_written_manifests_follow_the_published_schema(etam_bundle, vit_bundle, tmp_path, capsys):
    """fp32 bundles and a quantized one, checked by jsonschema against the file apps read (not via our reader)."""
    from importlib import resources

    from edgevit.commands.quantize import quantize

    published = json.loads(resources.files("converters.bundle").joinpath("bundle.v1.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(published)
    tiny = ["depth=2", "img_size=64", "num_classes=10"]
    quantize("vit", "ti16_224", None, tiny, "ptq", "8", None, "builtin", "onnx", False, tmp_path / "int8", False, True)
    capsys.readouterr()
    for bundle in (etam_bundle, vit_bundle, tmp_path / "int8"):
        jsonschema.validate(json.loads((bundle / "manifest.json").read_text()), published)
    assert json.loads((tmp_path / "int8" / "manifest.json").read_text())["quant"]["method"] == "ptq"


def test_writer_refuses_an_invalid_manifest(vit_bundle, tmp_path):
    manifest = read_manifest(vit_bundle)
    manifest["artifacts"][0]["target"] = "tensorrt"
    with pytest.raises(BundleError, match=r"manifest.json \(being written\): artifacts\[0\].target: 'tensorrt'"):
        write_manifest(tmp_path, Manifest.from_dict(manifest))
    assert list(tmp_path.iterdir()) == []
    assert schema()["properties"]["schema_version"] == {"const": 1}


def test_artifact_a_runtime_cannot_parse_is_one_line(etam_bundle, tmp_path, monkeypatch, capfd):
    """Bytes the manifest vouches for (size and sha256 rewritten to match) that are not a model: the runtime's
    own failure becomes one line naming the artifact."""
    bundle = tmp_path / "bundle"
    shutil.copytree(etam_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    art = manifest["artifacts"][0]
    junk = b"not an onnx model\n" * 100
    (bundle / art["path"]).write_bytes(junk)
    art["size_bytes"], art["sha256"] = len(junk), hashlib.sha256(junk).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(tmp_path)
    code, out, err = run(monkeypatch, capfd, *COMMANDS["track"](bundle, tmp_path / "masks"))
    assert code == 2 and err.count("\n") == 1 and out == "", err
    assert err.startswith("error: the onnx runtime cannot load 'onnx/image_encoder.fp32.onnx': "), err
    assert snapshot(tmp_path) == before
