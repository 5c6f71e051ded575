"""ED-ViT's pieces without a network or a model: class partition, device assignment, fusion, the spec file."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from edgevit.compress.split import Device, DeviceEntry, FusionSpec, assign, fuse, partition_classes, read_devices
from edgevit.compress.split.fusion import check_bundle, fuse_scores, log_softmax
from edgevit.compress.split.submodel import collapse
from edgevit.errors import EdgevitError


def _spec(parts: list[list[int]], shas: list[str] | None = None) -> FusionSpec:
    devices = tuple(
        DeviceEntry(f"d{i}", f"d{i}", (shas or [""] * len(parts))[i], tuple(p), 1.0, 100) for i, p in enumerate(parts)
    )
    classes = tuple(str(c) for c in range(sum(len(p) for p in parts)))
    return FusionSpec(classes, devices, (16, 16), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_partition_is_balanced_contiguous_and_refuses_more_devices_than_classes():
    assert partition_classes(10, 3) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert partition_classes(4, 4) == [[0], [1], [2], [3]]
    with pytest.raises(EdgevitError, match="11 devices but only 10 classes"):
        partition_classes(10, 11)


def test_collapse_keeps_own_classes_and_sums_the_rest_into_other():
    logits = torch.randn(5, 10, generator=torch.Generator().manual_seed(0))
    probs = logits.softmax(-1)
    out = collapse(logits, [2, 7]).exp()
    assert torch.allclose(out[:, :2], probs[:, [2, 7]], atol=1e-6)
    assert torch.allclose(out[:, 2], 1 - probs[:, [2, 7]].sum(-1), atol=1e-6)


def test_fusion_of_exact_collapsed_answers_recovers_the_full_distribution():
    """If every device answered the full model's collapsed probabilities, the product of experts is the full
    distribution up to the per-class factors (1 - p(own)) of the others: the argmax is kept where one class
    dominates, and the fused distribution is proper."""
    parts = [[0, 1, 2], [3, 4], [5, 6, 7]]
    spec = _spec(parts)
    logits = torch.tensor([[0.0] * 8]).repeat(3, 1)
    for row, winner in enumerate((1, 4, 6)):
        logits[row, winner] = 6.0
    outputs = {f"d{i}": collapse(logits, p).numpy() for i, p in enumerate(parts)}
    fused = fuse_scores(spec, outputs)
    assert np.allclose(fused.sum(-1), 1.0)
    assert fused.argmax(-1).tolist() == [1, 4, 6]


def test_a_missing_device_leaves_its_classes_unscored_and_the_rest_a_proper_distribution():
    parts = [[0, 1], [2, 3], [4]]
    spec = _spec(parts)
    rng = np.random.default_rng(0)
    answers = {f"d{i}": rng.normal(size=(1, len(p) + 1)) for i, p in enumerate(parts)}
    whole = fuse(spec, answers)
    assert not whole.partial
    partial = fuse(spec, {k: v for k, v in answers.items() if k != "d1"}, {"d1": "DEADLINE_EXCEEDED"})
    assert partial.partial and partial.missing == {"d1": "DEADLINE_EXCEEDED"}
    assert partial.probabilities[[2, 3]].tolist() == [0.0, 0.0]
    assert partial.probabilities.sum() == pytest.approx(1.0)
    # the classes still scored keep their relative odds: the missing device's "other" factor is common to them
    kept = [0, 1, 4]
    ratio = whole.probabilities[kept] / partial.probabilities[kept]
    assert np.allclose(ratio, ratio[0])
    assert partial.label in kept


def test_fusion_refuses_an_answer_of_the_wrong_width_and_no_answer_at_all():
    spec = _spec([[0, 1], [2]])
    with pytest.raises(EdgevitError, match="answered 2 scores, the spec expects 3"):
        fuse(spec, {"d0": np.zeros((1, 2)), "d1": np.zeros((1, 2))})
    with pytest.raises(EdgevitError, match="no device answered"):
        fuse(spec, {})


def test_log_softmax_is_stable_for_large_logits():
    assert np.allclose(np.exp(log_softmax(np.array([[1000.0, 1000.0]]))), 0.5)


def test_assign_pairs_largest_need_with_largest_device_and_says_what_would_fit():
    mb = 2**20
    devices = [Device("small", 1.0), Device("big", 3.0), Device("mid", 2.0)]
    chosen = assign([int(1.5 * mb), int(0.9 * mb), int(2.5 * mb)], devices, ["a", "b", "c"])
    assert [d.name for d in chosen] == ["mid", "small", "big"]
    with pytest.raises(EdgevitError, match=r"sub-model c needs 2\.500 MB .* 'big', has memory_mb = 2; .*>= 2\.500"):
        assign([mb, mb, int(2.5 * mb)], [Device("big", 2.0), Device("x", 1.0), Device("y", 1.0)], ["a", "b", "c"])


def test_read_devices_checks_every_field(tmp_path):
    path = tmp_path / "devices.toml"
    second = '[[devices]]\nname = "c"\nmemory_mb = 1\n'
    path.write_text('[[devices]]\nname = "a"\nmemory_mb = 2\naddress = "127.0.0.1:5"\n' + second)
    assert read_devices(path) == [Device("a", 2.0, "127.0.0.1:5"), Device("c", 1.0)]
    bad = {
        '[[devices]]\nname = "a"\nmemory_mb = 2\n': "lists 1 device",
        '[[devices]]\nname = "a/b"\nmemory_mb = 2\n' + second: "short folder name",
        '[[devices]]\nname = "a"\nmemory_mb = 0\n' + second: "positive number",
        second + second: "appears twice",
        '[[devices]]\nname = "a"\nmemory_mb = 1\ngpu = 1\n' + second: "unknown key 'gpu'",
        '[[devices]]\nname = "a"\nmemory_mb = 1\naddress = "h"\n' + second: "HOST:PORT",
        "devices = 3\n": "expected only",
    }
    for text, message in bad.items():
        path.write_text(text)
        with pytest.raises(EdgevitError, match=message):
            read_devices(path)
    with pytest.raises(EdgevitError, match="does not exist"):
        read_devices(tmp_path / "missing.toml")


def test_spec_round_trips_and_pins_each_bundle_by_its_manifest(tmp_path):
    bundle = tmp_path / "d0"
    bundle.mkdir()
    (bundle / "manifest.json").write_text('{"schema": "edgevit.bundle"}\n')
    sha = hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    spec = _spec([[0], [1, 2]], [sha, "0" * 64])
    (tmp_path / "fusion.json").write_text(spec.to_json())
    again = FusionSpec.read(tmp_path)
    assert again == spec
    check_bundle(again.devices[0], bundle)
    (bundle / "manifest.json").write_text('{"schema": "edgevit.bundle", "edited": 1}\n')
    with pytest.raises(EdgevitError, match="does not match the fusion spec"):
        check_bundle(again.devices[0], bundle)


def test_spec_refuses_classes_that_are_not_a_partition(tmp_path):
    doc = json.loads(_spec([[0], [1, 2]]).to_json())
    doc["devices"][1]["classes"] = [1, 1]
    (tmp_path / "fusion.json").write_text(json.dumps(doc))
    with pytest.raises(EdgevitError, match="not a partition"):
        FusionSpec.read(tmp_path / "fusion.json")
