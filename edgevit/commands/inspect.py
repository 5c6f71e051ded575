"""`edgevit inspect`: what a bundle holds — units × targets with size, precision and parity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def parity_text(art: dict[str, Any]) -> str:
    if art["parity"] is None:
        return art["parity_note"] or "-"
    worst = min(art["parity"].values(), key=lambda p: float(p["sqnr_db"]))
    return f"{float(worst['sqnr_db']):.1f} dB, max |Δ| {float(worst['max_abs_diff']):.1e}"


def print_table(manifest: dict[str, Any], bundle: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    model = manifest["model"]
    weights = manifest["weights"]["source"]
    table = Table(title=f"{bundle}: {model['name']} {model['variant']} ({weights} weights)")
    for col in ("unit", "target", "precision", "size", "convert s", "parity (worst output)"):
        table.add_column(col, justify="right" if col in ("size", "convert s") else "left")
    for art in manifest["artifacts"]:
        table.add_row(
            art["unit"],
            art["target"],
            art["precision"],
            f"{art['size_bytes'] / 1e6:.1f} MB",
            f"{art['conversion_seconds']:.1f}",
            parity_text(art),
        )
    Console().print(table)


def inspect(bundle: Path, as_json: bool) -> None:
    from edgevit.bundle import read_manifest

    manifest = read_manifest(bundle)
    if as_json:
        print(json.dumps(manifest, indent=2))
    else:
        print_table(manifest, bundle)
