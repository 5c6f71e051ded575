"""`edgevit convert`: a registered model's deploy units → a verified bundle for one or all targets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgevit.errors import EdgevitError


def convert(model_name: str, variant: str | None, checkpoint: Path | None, target: str, precision: str | None,
            out: Path, force: bool, as_json: bool) -> None:
    from rich.console import Console
    from rich.progress import Progress

    from edgevit.bundle import resolve_targets, write_bundle
    from edgevit.commands.inspect import print_table
    from edgevit.io import check_out
    from edgevit.models import create

    console = Console(stderr=True)
    targets = resolve_targets(target)
    if precision is not None and precision not in ("fp32", "fp16"):
        raise EdgevitError(f"unknown precision {precision!r}; valid: fp32, fp16")
    check_out(out, force)
    model = create(model_name, variant, checkpoint=checkpoint)
    if checkpoint is None:
        console.print("[bold yellow]note: no --checkpoint: converting RANDOM weights (files are valid, "
                      "outputs meaningless)[/]")
    units = model.deploy_units()
    with Progress(console=console, transient=not sys.stderr.isatty()) as progress:
        task = progress.add_task("converting", total=len(units) * len(targets))

        def step(unit: str, tgt: str) -> None:
            progress.update(task, description=f"{unit} → {tgt}")

        try:
            manifest = write_bundle(model, targets, precision, out, force, on_artifact=step)
        finally:
            progress.update(task, completed=len(units) * len(targets))
    if as_json:
        print(json.dumps(manifest, indent=2))
    else:
        print_table(manifest, out)
