"""`edgevit bench` on an EfficientTAM bundle: its converted tracker against the fp32 eager tracker of the same
checkpoint on a clip (mask IoU), and J&F on a DAVIS-layout folder the test writes. A tiny Ti at 128 px with the
object-score bias raised (random weights say "no object": STACK.md), so masks are not empty and the IoU checks
the artifacts' arithmetic."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.benchmarks.test_bench_davis import write_davis
from tests.test_cli import run


@pytest.fixture(scope="module")
def tracker_bundle(efficienttam_tiny) -> tuple[Path, Path]:
    """The shared EfficientTAM-Ti 128 px bundle (tests/conftest.py) and the checkpoint it was converted from."""
    _, bundle, checkpoint = efficienttam_tiny
    return bundle, checkpoint


def moving_square(frames: int) -> list[np.ndarray]:
    masks = []
    for i in range(frames):
        ids = np.zeros((64, 96), dtype=np.uint8)
        ids[16:48, 20 + 3 * i : 52 + 3 * i] = 1
        masks.append(ids)
    return masks


def test_converted_tracker_against_the_eager_one_and_davis_ground_truth(tracker_bundle, tmp_path):
    """What `edgevit bench --target onnx --clip-frames 3 --davis DIR --checkpoint CKPT` adds to the results after
    timing the artifacts (called directly: timing is tested in test_bench.py), and its tables and plot."""
    from benchmarks.bench import BenchSettings
    from benchmarks.bench_results import tracker_tables
    from benchmarks.html_plots import tracker_iou_plot
    from converters.bundle import read_manifest
    from edgevit.commands.bench import TrackerOptions, tracker_section

    bundle, checkpoint = tracker_bundle
    davis = tmp_path / "davis"
    write_davis(davis, moving_square(4))
    manifest = read_manifest(bundle)
    options = TrackerOptions(frames=3, davis=davis, checkpoint=checkpoint)
    options.check(manifest)
    settings = BenchSettings(threads=1, targets=("onnx",))
    tracker = tracker_section(bundle, manifest, settings, "local", options, None)
    assert tracker["reference"] == "eager fp32 (checkpoint)" and tracker["frames"] == 3 and tracker["label"] is None
    (row,) = tracker["rows"]  # --target onnx: the ExecuTorch and LiteRT trackers are left out
    assert (row["target"], row["precision"], row["status"]) == ("onnx", "fp32", "ok")
    assert row["reference_area"] > 0.01  # the object is there: the IoU is not two empty masks agreeing
    assert row["iou_mean"] > 0.95 and row["iou_min"] <= row["iou_mean"] and float(row["logit_sqnr_db"]) > 30
    eager, onnx = tracker["davis"]["rows"]
    assert eager["tracker"] == "eager fp32 (checkpoint)" and onnx["tracker"] == "onnx fp32"
    for scores in (eager, onnx):
        (obj,) = scores["objects"]
        assert obj["sequence"] == "square" and obj["object"] == 1 and obj["frames_scored"] == 2
        assert obj["per_frame_J"][0] > 0.8  # frame 0 is the prompt mask itself, resampled through 32x32
        assert 0 <= scores["J"] <= 1 and 0 <= scores["F"] <= 1
        assert scores["J&F"] == pytest.approx((scores["J"] + scores["F"]) / 2)
    assert onnx["J"] == pytest.approx(eager["J"], abs=0.05)
    clip, jf = tracker_tables(json.loads(json.dumps(tracker)))
    assert clip.rows[0][:2] == ["onnx fp32", "ok"] and jf.rows[1][0] == "onnx fp32"
    svg = tracker_iou_plot([{"label": "onnx fp32", "iou_mean": row["iou_mean"], "iou_min": row["iou_min"]}])
    assert 'id="tracker-iou-point-0"' in svg


def test_a_checkpoint_that_is_not_the_bundles_is_one_line(tracker_bundle, tmp_path, monkeypatch, capsys):
    bundle, checkpoint = tracker_bundle
    other = tmp_path / "other.pt"
    state = torch.load(checkpoint, weights_only=True)
    next(iter(state["model"].values())).add_(1.0)
    torch.save(state, other)
    out = tmp_path / "results.json"
    code, _, err = run(monkeypatch, capsys, "bench", str(bundle), "--runs", "1", "--checkpoint", str(other),
                       "--out", str(out))  # fmt: skip
    assert code == 2 and len(err.splitlines()) == 1 and "not the checkpoint this bundle was converted from" in err, err
    assert not out.exists()


def test_logit_sqnr_leaves_out_frames_that_agree_bit_for_bit() -> None:
    """A "no object" frame is -1024 on both sides: it must neither make the figure infinite nor swamp it."""
    from edgevit.video.fidelity import agreement
    from edgevit.video.tracker import FrameResult

    empty = torch.full((8, 8), -1024.0)
    seen = torch.linspace(-1.0, 1.0, 64).reshape(8, 8)
    noisy = seen + 0.01
    reference = [FrameResult(0, empty, -5.0), FrameResult(1, seen, 5.0)]
    got = [FrameResult(0, empty.clone(), -5.0), FrameResult(1, noisy, 5.0)]
    figures = agreement(reference, got)
    expected = 10 * math.log10(float(seen.pow(2).sum()) / float((noisy - seen).pow(2).sum()))
    assert figures["logit_sqnr_db"] == pytest.approx(expected, abs=1e-6) and figures["iou_mean"] == 1.0
