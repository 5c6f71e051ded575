"""The W8A8 goal is judged on the held-out video frames and on the whole held-out set, each against its best peer."""

from __future__ import annotations

from benchmarks.suites.quant.goals import goal_margin_over_peers


def _row(origin: str, method: str, whole: float, video: float | None) -> dict:
    return {
        "status": "ok",
        "origin": origin,
        "method": method,
        "variant": "v",
        "bits": "W8A8",
        "evaluated": "e",
        "sqnr_db": whole,
        "video_sqnr_db": video,
    }


def test_video_frames_and_whole_set_are_judged_apart() -> None:
    rows = [
        _row("ours", "ptq", 40.0, 37.0),
        _row("peer", "aeq", 36.5, 30.0),  # best peer on the whole set
        _row("peer", "ort", 35.0, 35.5),  # best peer on the video frames
        _row("peer", "old", 39.0, None),  # a row from before video frames were scored counts only for the whole set
    ]
    models = {"dinov2_s_focus": {"subject": {}, "sections": {"uniform": {"rows": rows}}}}
    video, whole = goal_margin_over_peers(models)
    assert "held-out video frames" in video and "ort (v) 35.5 dB" in video and "missed by 1.50 dB" in video
    assert "whole held-out set" in whole and "old (v) 39.0 dB" in whole and "missed by 2.00 dB" in whole
    rows[0]["video_sqnr_db"] = None
    assert goal_margin_over_peers(models)[0].endswith("held-out video frames: not measured.")


def test_static_onnx_encoder_goal_takes_the_fastest_artifact_that_holds_30_db() -> None:
    from benchmarks.suites.quant.goals import goal_static_onnx_encoder

    def artifact(label: str, origin: str, sqnr: float, target: str = "onnx") -> dict:
        return {
            "status": "ok", "kind": "artifact", "target": target, "origin": origin, "method": label,
            "variant": "v", "label": label, "bits": "W8A8", "sqnr_db": sqnr,
        }  # fmt: skip

    stats = {"eager fp32": 1000.0, "ptq": 350.0, "fast": 200.0, "tflite": 100.0}
    timing = {
        "status": "ok", "kind": "timing", "threads": 2, "cpu_per_wall": {"eager fp32": 0.5, "ptq": 0.8},
        "stats": {k: {"median_ms": v} for k, v in stats.items()},
    }  # fmt: skip
    rows = [
        artifact("ptq", "ours", 31.0),
        artifact("fast", "peer", 25.0),  # faster but below 30 dB: not counted
        artifact("tflite", "ours", 40.0, target="tflite"),  # not ONNX Runtime
        timing,
    ]
    models = {"efficienttam_s_512": {"sections": {"deploy": {"rows": rows}}}}
    (line,) = goal_static_onnx_encoder(models)
    assert "ours ptq (v) 350 ms vs eager 1000 ms = 2.86× at 31.0 dB" in line and "int8 0.80" in line
    assert line.endswith("met by 0.36×.")
    rows[0]["sqnr_db"] = 29.0
    assert goal_static_onnx_encoder(models)[0].endswith("none at that SQNR — missed.")
