"""The command line as a user meets it: exit codes, one-line errors, files written or not."""

from __future__ import annotations

import json
import sys

import pytest

from converters.bundle import MARKER
from edgevit.cli import main


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in-process: (exit code, stdout, stderr) as `capsys` (or `capfd`, at the file descriptor) saw them."""
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
    # timm's names, each under its own family (not `mobilevit_mobilevit_xxs`)
    assert (rows["mobilevit_xxs"]["model"], rows["mobilevit_xxs"]["variant"]) == ("mobilevit", "mobilevit_xxs")
    assert rows["efficientformer_l1"]["model"] == "efficientformer"


@pytest.mark.parametrize(
    "command", [[], ["models"], ["track"], ["convert"], ["inspect"], ["quantize"], ["distill"], ["bench"], ["report"]]
)
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
        (["track", "sample:bikes", "--point", "1,1", "--bundle", ".", "--bf16"], "drop --bf16 or --bundle"),
        (["track", "{garbage}", "--point", "1,1"], "cannot read video"),
        (["convert", "--model", "vit", "--target", "tensorrt"], "valid targets: onnx, executorch, tflite, coreml"),
        (["convert", "--model", "vit", "--precision", "int3"], "unknown precision 'int3'"),
        (["inspect", "{garbage}"], "is not a bundle"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(monkeypatch, capsys, tmp_path, args, message):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video")
    args = [a.replace("{garbage}", str(garbage)) for a in args]
    out_dir = tmp_path / "masks"
    out_args = [] if args[0] == "inspect" else ["--out", str(out_dir)]
    code, _, err = run(monkeypatch, capsys, *args, *out_args)
    assert code == 2
    lines = err.splitlines()  # the whole of stderr: one line
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not out_dir.exists() and list(tmp_path.iterdir()) == [garbage]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["nosuchcmd"],
            "No such command 'nosuchcmd'. Commands: bench, convert, distill, extract, inspect, models, quantize, "
            "report, serve, split, split-infer, track, train.",
        ),
        (["convet", "--model", "vit"], "No such command 'convet'. Did you mean 'convert'?"),
        (["convert", "--no-such-flag"], "No such option: --no-such-flag (see 'edgevit convert --help')"),
        (["convert", "--ouy", "b"], "No such option: --ouy (Possible options: --out)"),
        (["convert", "--model", "vit", "--out"], "Option '--out' requires an argument."),
        (["track", "sample:bikes", "--point", "1,1", "--max-frames", "abc"], "Invalid value for '--max-frames'"),
        (["track", "sample:bikes", "--point", "1,1", "--max-frames", "0"], "greater than or equal to 1"),
        (["quantize", "--method", "ptq"], "Missing option '--model'."),
    ],
)
def test_usage_error_is_one_line_exit_2(monkeypatch, capsys, tmp_path, args, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert list(tmp_path.iterdir()) == []


def test_track_writes_masks_and_overlay(monkeypatch, capsys, tmp_path):
    out_dir = tmp_path / "masks"
    code, out, err = run(
        monkeypatch,
        capsys,
        "track",
        "sample:bikes",
        "--point",
        "320,140",
        "--variant",
        "ti_512",
        "--max-frames",
        "2",
        "--out",
        str(out_dir),
        "--json",
    )
    assert code == 0, err
    assert "RANDOM" in err
    summary = json.loads(out)
    assert summary["frames"] == 2 and summary["weights"] == "random"
    assert sorted(p.name for p in out_dir.iterdir()) == [MARKER, "00000.png", "00001.png", "overlay.mp4"]
    assert [p.name for p in tmp_path.iterdir()] == ["masks"]  # no temp folder left beside it
    code, _, err = run(monkeypatch, capsys, "track", "sample:bikes", "--point", "1,1", "--out", str(out_dir))
    assert code == 2 and "already exists; pass --force" in err


def test_convert_then_inspect(monkeypatch, capsys, tmp_path):
    out_dir = tmp_path / "bundle"
    code, _, err = run(
        monkeypatch, capsys, "convert", "--model", "mobilevit_xxs", "--target", "onnx", "--out", str(out_dir)
    )
    assert code == 0, err
    assert "RANDOM" in err
    assert (out_dir / "manifest.json").is_file() and (out_dir / "convert.log").is_file()
    code, out, _ = run(monkeypatch, capsys, "inspect", str(out_dir), "--json")
    assert code == 0
    manifest = json.loads(out)
    (art,) = manifest["artifacts"]
    assert art["target"] == "onnx" and art["unit"] == "model" and float(art["parity"]["logits"]["sqnr_db"]) > 60
    assert (manifest["model"]["name"], manifest["model"]["loop"]) == ("mobilevit", "single")
    code, out, _ = run(monkeypatch, capsys, "inspect", str(out_dir))
    assert code == 0 and "mobilevit" in out and "onnx" in out
