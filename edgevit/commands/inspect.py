"""`edgevit inspect`: what a bundle holds — units × targets with size, precision and parity (the manifest is
validated on read; `--verify` checks every artifact's bytes too)."""

from __future__ import annotations

import json
from pathlib import Path


def inspect(bundle: Path, as_json: bool, verify: bool = False) -> None:
    """Print the bundle's manifest (validated on read); with `verify`, first check every artifact's size and
    sha256 — the first bad one is the one-line error."""
    from converters.bundle import read_manifest, verify_artifact
    from edgevit.console.table import print_table

    manifest = read_manifest(bundle)
    if verify:
        for i, art in enumerate(manifest["artifacts"]):
            verify_artifact(bundle, art, i)
    if as_json:
        print(json.dumps(manifest, indent=2))
    else:
        print_table(manifest, bundle, verify)
