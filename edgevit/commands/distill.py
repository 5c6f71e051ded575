"""`edgevit distill`: train (or load from the cache) one of the students and write it as a checkpoint.

The checkpoint is `{"model": state_dict}`, the format `--checkpoint` reads everywhere, so the student can be
quantized or converted like any registered model; the command prints the exact flags that rebuild it.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from edgevit.errors import EdgevitError


def _shown(key: str, value: float) -> str:
    """Durations in seconds, counts and losses as numbers, the rest (agreements, accuracies) as percentages."""
    if key.endswith("_seconds"):
        return f"{value:.1f} s"
    if key.endswith(("_loss", "_distinct_top1")):
        return f"{value:.4g}"
    return f"{100 * value:.1f} %"


def distill(student: str, seed: int, out: Path, force: bool, as_json: bool) -> None:
    import torch
    from rich.console import Console
    from rich.table import Table

    from converters.bundle import atomic_file, check_file_out
    from edgevit.training.students import cache_path, load_student, quantize_flags, recipe

    recipe(student)  # an unknown name fails here, before any slow work
    out = Path(out)
    if out.is_dir():
        raise EdgevitError(f"--out {out} is a folder; the checkpoint is one file (e.g. --out {student}.pt)")
    check_file_out(out, force)
    cached = cache_path(student, seed)
    was_cached = cached.is_file()
    result = load_student(student, seed=seed)
    with atomic_file(out, force) as tmp:
        torch.save({"model": result.model.state_dict()}, tmp)
    flags = f"{quantize_flags(student)} --checkpoint {shlex.quote(str(out))}"
    if as_json:
        summary = {
            "student": student,
            "seed": seed,
            "teacher": result.teacher,
            "checkpoint": str(out),
            "cache": str(cached),
            "from_cache": was_cached,
            "metrics": result.metrics,
            "quantize_flags": flags,
        }
        print(json.dumps(summary, indent=2))
        return
    table = Table(title=f"{student} (seed {seed}{', from cache' if was_cached else ''})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.metrics.items():
        table.add_row(key, _shown(key, value))
    console = Console()
    console.print(table)
    console.print(f"checkpoint: {out}", soft_wrap=True)
    console.print(f"cached weights: {cached}", soft_wrap=True)
    console.print(f"use it with: edgevit quantize {flags}", soft_wrap=True)
