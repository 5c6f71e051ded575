"""Results files: one JSON (everything, for tools) and one Markdown (the tables, for people), plus the console.

Both files carry the machine description and the date, because a latency without them cannot be compared
with anything later. Milliseconds sit beside FLOPs and the fraction of the machine's measured fp32 GEMM
rate, so a reader can tell "slow because it computes a lot" from "slow because the runtime is poor at it".
JSON is written strict (no bare Infinity/NaN: an SQNR of inf becomes the string "inf") so Swift's and
Kotlin's decoders read it as the manifests are read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class Table:
    """One results table: cells are plain values, formatted by the caller (None shows as an empty cell)."""

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def eager_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one eager call as torch's FlopCounterMode counts them: matmuls, convolutions and attention
    (2 per multiply-add); elementwise ops, norms and softmax are not counted, so this is the GEMM work that
    a "% of GEMM peak" figure is about, not every operation."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def gflops_per_second(flops: int | None, seconds: float | None) -> float | None:
    """Achieved rate, or None when either figure is missing (a unit that did not run)."""
    if not flops or not seconds:
        return None
    return flops / seconds / 1e9


def percent_of_peak(flops: int | None, seconds: float | None, peak_gflops: float | None) -> float | None:
    """Achieved rate as a percentage of `peak_gflops` (the measured fp32 GEMM rate)."""
    rate = gflops_per_second(flops, seconds)
    if rate is None or not peak_gflops:
        return None
    return 100.0 * rate / peak_gflops


def json_safe(obj: Any) -> Any:
    """`obj` with non-finite floats as strings and tuples/paths as lists/strings, so json.dumps is strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def render_markdown(
    title: str, date: str, machine: dict[str, Any], tables: Sequence[Table], summary: Sequence[str]
) -> str:
    """The Markdown report: title, date, machine, summary bullets, then each table with its notes."""
    lines = [f"# {title}", "", f"Measured {date}.", "", "## Machine", "", *_machine_lines(machine), ""]
    if summary:
        lines += ["## Summary", "", *(f"- {s}" for s in summary), ""]
    for table in tables:
        lines += [f"## {table.title}", ""]
        lines.append("| " + " | ".join(table.columns) + " |")
        lines.append("|" + "|".join("---" for _ in table.columns) + "|")
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
        lines += ["", *(f"- {n}" for n in table.notes)] if table.notes else []
        lines.append("")
    return "\n".join(lines)


def print_tables(tables: Sequence[Table], console: Console | None = None) -> None:
    """The same tables on the console."""
    console = console or Console()
    for table in tables:
        rich_table = RichTable(title=table.title, show_lines=False)
        for col in table.columns:
            rich_table.add_column(col, overflow="fold")
        for row in table.rows:
            rich_table.add_row(*(_cell(c) for c in row))
        console.print(rich_table)
        for note in table.notes:
            console.print(f"  · {note}", style="dim")


def publish(
    out_dir: Path,
    name: str,
    *,
    title: str,
    machine: dict[str, Any],
    tables: Sequence[Table],
    summary: Sequence[str] = (),
    data: dict[str, Any] | None = None,
    console: Console | None = None,
) -> tuple[Path, Path]:
    """What every suite does last: write the results (`write_report`), show the tables and the summary, and say
    where the files went."""
    console = console or Console()
    json_path, md_path = write_report(
        out_dir, name, title=title, machine=machine, tables=tables, summary=summary, data=data
    )
    print_tables(tables, console)
    for line in summary:
        console.print(f"• {line}")
    console.print(f"wrote {json_path} and {md_path}")
    return json_path, md_path


def write_report(
    out_dir: Path,
    name: str,
    *,
    title: str,
    machine: dict[str, Any],
    tables: Sequence[Table],
    summary: Sequence[str] = (),
    data: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write `out_dir/name.json` and `out_dir/name.md`; returns both paths.

    The JSON holds the tables as well as `data` (the raw figures, samples included) so a later script can
    re-plot or re-tabulate without re-running; the Markdown is for reading and diffing in review.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    date = datetime.now(UTC).isoformat(timespec="seconds")
    payload = {
        "name": name,
        "title": title,
        "date": date,
        "machine": machine,
        "summary": list(summary),
        "tables": [{"title": t.title, "columns": t.columns, "rows": t.rows, "notes": t.notes} for t in tables],
        "data": data or {},
    }
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_path.write_text(json.dumps(json_safe(payload), indent=1, allow_nan=False) + "\n")
    md_path.write_text(render_markdown(title, date, machine, tables, summary))
    return json_path, md_path


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value).replace("|", "\\|")


def _machine_lines(machine: dict[str, Any]) -> list[str]:
    isa = ", ".join(k for k, v in machine.get("isa", {}).items() if v) or "none of interest"
    vers = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items())
    lines = [
        f"- CPU: {machine.get('cpu_model')} ({machine.get('architecture')}"
        f"{', virtualised' if machine.get('virtualised') else ''}); "
        f"{machine.get('cores_available')} cores available of {machine.get('cores_online')} online; "
        f"RAM {machine.get('ram_gib')} GiB",
        f"- ISA: {isa}",
        f"- OS: {machine.get('os')}; Python {machine.get('python')}",
        f"- Versions: {vers}",
        f"- Load average (1/5/15 min) when described: {machine.get('load_average')}",
        f"- Threading: torch parallel backend {machine.get('torch_parallel_backend')}; environment "
        + (", ".join(f"{k}={v}" for k, v in machine.get("threading_env", {}).items() if v is not None) or "unset"),
        f"- Energy: {machine.get('energy', {}).get('note', 'not checked')}",
    ]
    if gemm := machine.get("gemm_fp32"):
        lines.append(
            f"- fp32 GEMM roof ({gemm['size']}² torch.matmul, {gemm['threads']} threads): "
            f"median {gemm['median_gflops']} GFLOP/s, best {gemm['best_gflops']} GFLOP/s"
        )
    return lines
