"""What every suite's command line shares: `--out`/`--name` (and `--threads`), and the last step publishing there."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from benchmarks.cli import publish_results, run_conditions, suite_parser
from benchmarks.report import Table


def test_suite_parser_holds_the_shared_flags_and_the_suite_adds_its_own(capsys) -> None:
    parser = suite_parser("python -m benchmarks.suites.x", "A suite.", name="x_results", threads=2, example="run x")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(["--runs", "3"])
    assert (args.out, args.name, args.threads, args.runs) == (Path("benchmarks/results"), "x_results", 2, 3)
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["--help"])
    assert done.value.code == 0
    assert "example:\n  run x" in capsys.readouterr().out
    # Without a default thread count the suite has no --threads (ED-ViT and MatFormer pin their own).
    bare = suite_parser("python -m benchmarks.suites.y", "Another.", name="y")
    assert not hasattr(bare.parse_args([]), "threads")
    with pytest.raises(SystemExit):
        bare.parse_args(["--threads", "1"])


def test_publish_results_writes_name_under_out_with_the_command_line(tmp_path, capsys) -> None:
    args = suite_parser("python -m benchmarks.suites.x", "A suite.", name="x", threads=1).parse_args(
        ["--out", str(tmp_path / "res"), "--name", "run1"]
    )
    table = Table("t", ["a"], [[1]])
    json_path, md_path = publish_results(
        args, title="T", machine={"cpu": "test"}, tables=[table], summary=["s"], data={"rows": [1, 2]}
    )
    assert (json_path, md_path) == (tmp_path / "res" / "run1.json", tmp_path / "res" / "run1.md")
    data = json.loads(json_path.read_text())["data"]
    assert data == {"args": {"out": str(tmp_path / "res"), "name": "run1", "threads": 1}, "rows": [1, 2]}
    assert f"wrote {json_path}" in capsys.readouterr().out.replace("\n", "")


def test_run_conditions_names_threads_wait_policy_load_and_length(monkeypatch) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    line = run_conditions(3, [0.5, 0.4, 0.3], time.perf_counter() - 61)
    expected = r"Threads: 3; OMP_WAIT_POLICY=PASSIVE; load \[0\.5, 0\.4, 0\.3\] → \[.*\]; whole run 61 s\."
    assert re.fullmatch(expected, line)
