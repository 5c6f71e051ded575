"""The W4 suite's table and goal verdicts, on small hand-made rows (no model, no runtime)."""

from __future__ import annotations

import pytest

from benchmarks.suites.quant_w4.report import COLUMNS, best, goal_lines, table
from benchmarks.suites.quant_w4.run import parse_args


def _row(who: str, method: str, sqnr: float | None, group: int | None = 32, latency: float | None = None, **kw):
    return {
        "status": "ok",
        "who": who,
        "tool": "edgevit" if who == "ours" else "peer-tool",
        "method": method,
        "group_size": group,
        "evaluated_in": "runtime" if latency is not None else "torch",
        "sqnr_db": sqnr,
        "latency_ms": latency,
        **kw,
    }


ROWS = [
    _row("peer", "RTN", 20.2, latency=30.0),
    _row("peer", "HQQ", 23.0),
    _row("ours", "min-max per-channel", 26.0, group=None),  # not group-wise: never counts for the goal
    _row("ours", "group MSE", 24.5, latency=25.0),
    _row("ours", "group MSE + GPTQ", 25.4),
    {**_row("peer", "GPTQ", None), "status": "failed", "error": "ValueError: boom"},
]


def test_goal_is_judged_on_the_best_group_wise_row_against_the_best_peer() -> None:
    overall, artifacts = goal_lines(ROWS)
    # 25.4 (GPTQ, group-wise) vs 23.0 (HQQ): +2.4 dB, met by 0.4; the 26.0 per-channel row is not group-wise.
    assert "ours edgevit group MSE + GPTQ, groups of 32 25.4 dB" in overall
    assert "vs peer-tool HQQ, groups of 32 23.0 dB" in overall
    assert "margin +2.40 dB — met by 0.40 dB" in overall
    # Among real artifacts only: 24.5 vs 20.2 → +4.3 dB.
    assert "real artifacts only" in artifacts and "margin +4.30 dB — met by 2.30 dB" in artifacts


def test_goal_says_missed_and_not_judged() -> None:
    missed = goal_lines([_row("peer", "HQQ", 23.0), _row("ours", "group MSE", 24.0)])[0]
    assert "margin +1.00 dB — missed by 1.00 dB" in missed
    nothing = goal_lines([_row("peer", "HQQ", 23.0), _row("ours", "min-max per-channel", 30.0, group=None)])
    assert all("not judged — no group-wise row of ours" in line for line in nothing)
    assert best(ROWS, "peer")["method"] == "HQQ"  # the failed row (no SQNR) is skipped


def test_table_lists_ours_first_best_first_with_errors_in_the_note() -> None:
    t = table(ROWS, "dinov2_s_focus")
    assert t.columns == COLUMNS and len(t.rows) == len(ROWS)
    methods = [r[COLUMNS.index("method")] for r in t.rows]
    assert methods == ["min-max per-channel", "group MSE + GPTQ", "group MSE", "HQQ", "RTN", "GPTQ"]
    assert t.rows[-1][COLUMNS.index("note")] == "ValueError: boom"
    assert t.rows[0][COLUMNS.index("SQNR dB")] == 26.0


def test_flags_parse_group_sizes_and_refuse_unknown_peers(capsys) -> None:
    args = parse_args(["--group-sizes", "32,64", "--peers", "ort,aeq"])
    assert args.group_sizes == [32, 64] and args.peers == ["ort", "aeq"]
    with pytest.raises(SystemExit):
        parse_args(["--peers", "tflite"])
    assert "unknown peer 'tflite'" in capsys.readouterr().err
