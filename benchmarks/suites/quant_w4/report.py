"""The W4 table and the issue's goal, from the stored rows alone (pure functions: no model, no runtime)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.report import Table

GOAL_MARGIN_DB = 2.0  # issue 14: "W4 (group-wise) SQNR at least the best W4 peer's + 2 dB"

COLUMNS = [
    "who",
    "tool",
    "method",
    "group",
    "evaluated in",
    "SQNR dB",
    "4-bit weights MB",
    "file MB",
    "median ms",
    "× fp32 same runtime",
    "build s",
    "note",
]


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def table(rows: Sequence[dict[str, Any]], model: str) -> Table:
    """One line per method and group size: ours first, then the peers, each sorted by SQNR (best first)."""
    ordered = sorted(rows, key=lambda r: (r["who"] != "ours", -(r.get("sqnr_db") or float("-inf"))))
    cells = [
        [
            r["who"],
            r["tool"],
            r["method"],
            r.get("group_size"),
            r.get("evaluated_in"),
            _round(r.get("sqnr_db"), 2),
            _round(r.get("weight_mb"), 2),
            _round(r.get("file_mb"), 2),
            _round(r.get("latency_ms"), 1),
            _round(r.get("vs_fp32"), 2),
            _round(r.get("seconds"), 1),
            r.get("error") or r.get("note"),
        ]
        for r in ordered
    ]
    return Table(
        f"W4 on {model}: output SQNR vs fp32 on held-out images, weight bytes, latency of the real artifact",
        COLUMNS,
        cells,
        notes=[
            "every method quantizes the model's Linear weights only, at 4 bits; everything else stays float",
            "4-bit weights MB: the stored integers (two a byte, or palette indices) plus their scales/zero-points/LUTs",
            "median ms: interleaved rounds, one call of each artifact per round; × fp32: over the fp32 artifact of "
            "the same runtime (eager torch for torch rows)",
        ],
    )


def best(rows: Sequence[dict[str, Any]], who: str, grouped_only: bool = False) -> dict[str, Any] | None:
    """The row of `who` with the highest SQNR (ours: only group-wise rows when `grouped_only`)."""
    found = [
        r
        for r in rows
        if r["who"] == who
        and r.get("status", "ok") == "ok"
        and r.get("sqnr_db") is not None
        and (not grouped_only or r.get("group_size"))
    ]
    return max(found, key=lambda r: r["sqnr_db"], default=None)


def _describe(row: dict[str, Any]) -> str:
    group = f", groups of {row['group_size']}" if row.get("group_size") else ""
    return f"{row['tool']} {row['method']}{group} {row['sqnr_db']:.1f} dB ({row['evaluated_in']})"


def goal_lines(rows: Sequence[dict[str, Any]], margin: float = GOAL_MARGIN_DB) -> list[str]:
    """The goal judged on every row, then on real artifacts only (rows with a runtime latency), honestly."""
    lines = []
    for scope, subset in (
        ("any evaluation", list(rows)),
        ("real artifacts only", [r for r in rows if r.get("latency_ms") is not None]),
    ):
        ours, peer = best(subset, "ours", grouped_only=True), best(subset, "peer")
        head = f"Goal, W4 (group-wise) SQNR ≥ best W4 peer + {margin:g} dB ({scope})"
        if ours is None or peer is None:
            lines.append(f"{head}: not judged — no {'group-wise row of ours' if ours is None else 'peer row'}.")
            continue
        delta = ours["sqnr_db"] - peer["sqnr_db"]
        verdict = f"met by {delta - margin:.2f} dB" if delta >= margin else f"missed by {margin - delta:.2f} dB"
        lines.append(f"{head}: ours {_describe(ours)} vs {_describe(peer)}: margin {delta:+.2f} dB — {verdict}.")
    return lines
