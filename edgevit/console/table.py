"""The bundle table commands print: units x targets with size, precision and parity.

Every string in the table comes from the manifest, which is untrusted: cells are rich `Text` (never parsed as
markup, so `[red]` or `[link=...]` print literally) with control characters shown as escapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def parity_text(art: dict[str, Any]) -> str:
    if art["parity"] is None:
        return art["parity_note"] or "-"
    worst = min(art["parity"].values(), key=lambda p: float(p["sqnr_db"]))
    return f"{float(worst['sqnr_db']):.1f} dB, max |Δ| {float(worst['max_abs_diff']):.1e}"


def print_table(manifest: dict[str, Any], bundle: Path, verified: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from converters.bundle import safe_text

    def cell(value: Any) -> Text:
        return Text(safe_text(str(value), 200))

    model = manifest["model"]
    weights = manifest["weights"]["source"]
    console = Console()
    console.print(cell(f"{bundle}: {model['name']} {model['variant']} ({weights} weights)"))
    table = Table()
    columns = ["unit", "target", "precision", "size", "convert s", "parity (worst output)"]
    for col in columns + (["verified"] if verified else []):
        table.add_column(col, justify="right" if col in ("size", "convert s") else "left")
    for art in manifest["artifacts"]:
        row = [
            cell(art["unit"]),
            cell(art["target"]),
            cell(art["precision"]),
            cell(f"{art['size_bytes'] / 1e6:.1f} MB"),
            cell(f"{art['conversion_seconds']:.1f}"),
            cell(parity_text(art)),
        ]
        table.add_row(*row, *([Text("ok")] if verified else []))
    console.print(table)
