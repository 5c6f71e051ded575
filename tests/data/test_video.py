"""Videos are streamed and counted by what decodes; a video or image that was not written is an error."""

from __future__ import annotations

import json
import weakref
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from edgevit.bundle import write_bundle
from edgevit.data import video as video_module
from edgevit.data.video import open_writer, read_frames, video_info
from edgevit.errors import EdgevitError
from edgevit.models import create
from edgevit.video.tracker import Tracker
from tests.test_cli import run

SIZE = (64, 48)  # width, height
FRAMES = 20


def _mjpg_avi(path: Path, frames: int = FRAMES) -> Path:
    """Noise frames in an MJPG AVI: its header states the frame count, and every frame is a separate JPEG."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, SIZE)
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8))
    writer.release()
    return path


def _truncated(tmp_path: Path) -> Path:
    """A video whose container claims FRAMES frames while only the first half of its bytes is left."""
    whole = _mjpg_avi(tmp_path / "whole.avi").read_bytes()
    path = tmp_path / "truncated.avi"
    path.write_bytes(whole[: len(whole) // 2])
    (tmp_path / "whole.avi").unlink()
    return path


def test_frame_count_is_what_decodes_not_what_the_container_claims(tmp_path):
    path = _truncated(tmp_path)
    claimed, width, height, _ = video_info(path)
    decoded = sum(1 for _ in read_frames(path))
    assert claimed == FRAMES and (width, height) == SIZE
    assert 0 < decoded < FRAMES
    assert sum(1 for _ in read_frames(path, max_frames=3)) == 3


def test_video_without_frames_is_an_error(tmp_path):
    empty = _mjpg_avi(tmp_path / "empty.avi", frames=0)
    with pytest.raises(EdgevitError, match="decodes no frame"):
        video_info(empty)
    with pytest.raises(EdgevitError, match="decodes no frame"):
        next(read_frames(empty))
    with pytest.raises(EdgevitError, match="at least 1"):
        next(read_frames(_mjpg_avi(tmp_path / "ok.avi", 2), max_frames=0))


def test_16_bit_frames_are_scaled_not_clamped(tmp_path):
    for i in range(2):  # a 16-bit PNG sequence: opencv's image-sequence decoder goes through ffmpeg
        assert cv2.imwrite(str(tmp_path / f"f{i:03d}.png"), np.full((8, 8), 32768, np.uint16))
    frames = list(read_frames(tmp_path / "f%03d.png"))
    assert len(frames) == 2 and frames[0].dtype == np.uint8 and frames[0].shape == (8, 8, 3)
    assert int(frames[0].min()) == int(frames[0].max()) == 128


def test_writer_that_does_not_open_is_an_error(tmp_path):
    writer = open_writer(tmp_path / "ok.mp4", 10.0, *SIZE)
    writer.release()
    with pytest.raises(EdgevitError, match="opencv cannot write the video"):
        open_writer(tmp_path / "missing" / "overlay.mp4", 10.0, *SIZE)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    """EfficientTAM-Ti at 64 px as ONNX: the smallest tracker `edgevit track --bundle` runs."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny") / "bundle"
    write_bundle(create("efficienttam_ti", image_size=64), ("onnx",), None, out)
    return out


def _track(monkeypatch, capsys, video: Path, out: Path, bundle: Path, *extra: str) -> tuple[int, str, str]:
    args = ["track", str(video), "--bundle", str(bundle), "--target", "onnx", "--point", "30,20"]
    return run(monkeypatch, capsys, *args, "--out", str(out), "--json", *extra)


def test_track_reports_the_frames_it_decoded(monkeypatch, capsys, tmp_path, tiny_bundle):
    video = _truncated(tmp_path)
    decoded = sum(1 for _ in read_frames(video))
    code, out, err = _track(monkeypatch, capsys, video, tmp_path / "masks", tiny_bundle)
    assert code == 0, err
    assert json.loads(out)["frames"] == decoded < FRAMES
    written = sorted(p.name for p in (tmp_path / "masks").iterdir() if not p.name.startswith("."))
    assert written == [f"{i:05d}.png" for i in range(decoded)] + ["overlay.mp4"]
    overlay = cv2.VideoCapture(str(tmp_path / "masks" / "overlay.mp4"))
    assert overlay.get(cv2.CAP_PROP_FRAME_COUNT) == decoded
    overlay.release()


def test_track_of_a_video_without_frames_fails_and_writes_nothing(monkeypatch, capsys, tmp_path, tiny_bundle):
    video = _mjpg_avi(tmp_path / "empty.avi", frames=0)
    code, out, err = _track(monkeypatch, capsys, video, tmp_path / "masks", tiny_bundle)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "decodes no frame" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.avi"]


def test_track_refuses_fewer_than_one_frame(tmp_path):
    from edgevit.commands.track import track

    video = _mjpg_avi(tmp_path / "clip.avi", 2)
    with pytest.raises(EdgevitError, match="--max-frames must be at least 1, got 0"):
        track(str(video), ["1,1"], [], None, "efficienttam", "ti", None, None, None, tmp_path / "m", 0, False, True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi"]


def test_track_streams_frames(monkeypatch, capsys, tmp_path, tiny_bundle):
    """The decoder stays within a frame of the tracker and decoded frames are freed once drawn."""
    video = _mjpg_avi(tmp_path / "clip.avi")
    decoded: list[weakref.ref] = []
    ahead: list[int] = []
    alive: list[int] = []
    real_read, real_track = video_module.read_frames, Tracker.track

    def counting_read(*args, **kwargs):
        for frame in real_read(*args, **kwargs):
            decoded.append(weakref.ref(frame))
            yield frame

    def watched_track(self, frames, prompt, num_frames=None):
        for result in real_track(self, frames, prompt, num_frames):
            ahead.append(len(decoded) - (result.index + 1))
            alive.append(sum(ref() is not None for ref in decoded))
            yield result

    monkeypatch.setattr(video_module, "read_frames", counting_read)
    monkeypatch.setattr(Tracker, "track", watched_track)
    code, out, err = _track(monkeypatch, capsys, video, tmp_path / "masks", tiny_bundle)
    assert code == 0, err
    assert json.loads(out)["frames"] == len(decoded) == len(ahead) == FRAMES
    assert max(ahead) <= 1, ahead
    assert max(alive) <= 3, alive


def test_track_with_a_writer_that_does_not_open_is_an_error(tmp_path, tiny_bundle):
    from rich.console import Console

    from edgevit.commands.track import _track_into
    from edgevit.video.assemble import bundle_tracker
    from edgevit.video.tracker import Prompt

    tracker, _ = bundle_tracker(tiny_bundle, "onnx")
    video = _mjpg_avi(tmp_path / "clip.avi", 2)
    prompt = Prompt(points=((30.0, 20.0),), labels=(1,))
    with pytest.raises(EdgevitError, match="opencv cannot write the video"):
        _track_into(tmp_path / "gone", tracker, prompt, video, None, 2, SIZE, 10.0, Console(stderr=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi"]
