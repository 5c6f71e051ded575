"""The command line as a user meets it: exit codes, one-line errors, files written or not."""

from __future__ import annotations

import json
import sys

import pytest

from edgevit.cli import main


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["edgevit", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_models_json_lists_every_family(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "models", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert round(rows["efficienttam_s"]["parameters"] / 1e6, 2) == 34.06  # STACK.md: whole EfficientTAM-S
    assert rows["efficienttam_ti_512"]["input_size"] == [512, 512]
    assert rows["vit_s16_224"]["parameters"] == 22_050_664


@pytest.mark.parametrize("command", [[], ["models"], ["track"]])
def test_help_has_an_example(monkeypatch, capsys, command):
    code, out, _ = run(monkeypatch, capsys, *command, "--help")
    assert code == 0
    assert "Usage" in out
    if command:
        assert "Example: edgevit" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["track", "nope.mp4", "--point", "1,1"], "does not exist"),
        (["track", "sample:bikes", "--point", "920,140"], "outside the 640x272 frame"),
        (["track", "sample:bikes", "--point", "1;1"], "is not X,Y"),
        (["track", "sample:bikes", "--point", "1,1", "--model", "nope"], "unknown model 'nope'"),
        (["track", "sample:bikes", "--point", "1,1", "--variant", "xl"], "valid variants: ti, s, ti_512, s_512"),
        (["track", "sample:bikes"], "no prompt"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(monkeypatch, capsys, tmp_path, args, message):
    out_dir = tmp_path / "masks"
    code, _, err = run(monkeypatch, capsys, *args, "--out", str(out_dir))
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    assert not out_dir.exists() and list(tmp_path.iterdir()) == []


def test_track_writes_masks_and_overlay(monkeypatch, capsys, tmp_path):
    out_dir = tmp_path / "masks"
    code, out, err = run(monkeypatch, capsys, "track", "sample:bikes", "--point", "320,140", "--variant", "ti_512",
                         "--max-frames", "2", "--out", str(out_dir), "--json")
    assert code == 0, err
    assert "RANDOM" in err
    summary = json.loads(out)
    assert summary["frames"] == 2 and summary["weights"] == "random"
    assert sorted(p.name for p in out_dir.iterdir()) == ["00000.png", "00001.png", "overlay.mp4"]
    assert [p.name for p in tmp_path.iterdir()] == ["masks"]  # no temp folder left beside it
    code, _, err = run(monkeypatch, capsys, "track", "sample:bikes", "--point", "1,1", "--out", str(out_dir))
    assert code == 2 and "already exists; pass --force" in err
