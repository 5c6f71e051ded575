"""`edgevit track --profile`: every unit and the loop's Python timed per frame, eager and through a bundle."""

from __future__ import annotations

import json

import pytest

from edgevit.video.profile import PARTS
from tests.test_cli import run


def _check_profile(profile: dict, frames: int) -> None:
    assert set(profile["units"]) == set(PARTS)
    assert profile["frames_measured"] == frames - 1 and profile["frames_skipped"] == 1
    assert len(profile["per_frame_ms"]) == frames
    for frame in profile["per_frame_ms"]:
        units = [frame[p] for p in PARTS if p != "loop"]
        assert all(ms > 0 for ms in units), frame  # every unit ran on every frame
        assert sum(units) <= frame["frame"] and frame["loop"] >= 0, frame
        assert sum(frame[p] for p in PARTS) == pytest.approx(frame["frame"], abs=1e-2)
    for part in profile["units"].values():
        assert {"median_ms", "p90_ms", "mean_ms", "share"} <= set(part) and part["p90_ms"] >= part["median_ms"]
    assert sum(p["share"] for p in profile["units"].values()) == pytest.approx(1.0, abs=1e-3)
    assert profile["fps"] == pytest.approx(1e3 / profile["frame"]["median_ms"], rel=1e-2)


def test_track_profile_eager_json(monkeypatch, capsys, tmp_path):
    args = ["track", "sample:bikes", "--point", "320,140", "--variant", "ti_512", "--max-frames", "3"]
    code, out, err = run(monkeypatch, capsys, *args, "--out", str(tmp_path / "m"), "--profile", "--json")
    assert code == 0, err
    _check_profile(json.loads(out)["profile"], 3)
    code, out, err = run(monkeypatch, capsys, *args, "--out", str(tmp_path / "plain"), "--json")
    assert code == 0 and "profile" not in json.loads(out)


def test_track_profile_bundle_table(monkeypatch, capsys, tmp_path):
    bundle = tmp_path / "bundle"
    convert = ["convert", "--model", "efficienttam", "--variant", "ti", "--set", "image_size=128"]
    code, _, err = run(monkeypatch, capsys, *convert, "--target", "onnx", "--out", str(bundle))
    assert code == 0, err
    args = ["track", "sample:bikes", "--point", "320,140", "--bundle", str(bundle), "--target", "onnx"]
    code, out, err = run(
        monkeypatch, capsys, *args, "--max-frames", "3", "--out", str(tmp_path / "m"), "--profile", "--json"
    )
    assert code == 0, err
    table = err[err.index("time per frame, onnx") :]  # the table on stderr, the JSON alone on stdout
    for part in (*PARTS, "frame"):
        assert f"\n│ {part} " in table, table
    summary = json.loads(out)
    assert summary["runtime"] == "onnx"
    _check_profile(summary["profile"], 3)
