"""Running a recipe for a command and printing what happens: the one path `edgevit convert` and `edgevit quantize`
share (neither calls the other).

A float conversion draws one progress bar and sends the backends' chatter to a log the bundle keeps; a run with
passes prints a line per artifact and lets calibration draw its own bars (one live display at a time).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgevit.pipeline import Progress, Recipe


class ConsoleProgress(Progress):
    """Notes and skipped targets on stderr; with passes a line per artifact and the plan on `--explain`."""

    bars = True

    def __init__(self, recipe: Recipe, explain: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.float_only = not recipe.passes
        self.show_plan = explain

    def skipped(self, target: str, why: str) -> None:
        self.console.print(f"[yellow]skipping {target}: it {why}[/]")

    def weights(self, origin: str) -> None:
        if origin != "random":
            return
        if self.float_only:
            self.console.print(
                "[bold yellow]note: no --checkpoint: converting RANDOM weights "
                "(files are valid, outputs meaningless)[/]",
                soft_wrap=True,
            )
        else:
            self.console.print(
                "[bold yellow]note: no --checkpoint: these weights are RANDOM (files are valid, outputs meaningless)[/]"
            )

    def explain(self, renderable: Any) -> None:
        if self.show_plan:
            self.console.print(renderable)

    def artifact(self, unit: str, target: str, done: int, total: int) -> None:
        if self.float_only:
            self.bar.update(self.task, description=f"{unit} → {target}", completed=done)
        else:
            self.console.print(f"lowering {unit} → {target}")

    @contextlib.contextmanager
    def lowering(self, total: int) -> Iterator[Path | None]:
        if not self.float_only:
            yield None
            return
        from rich.console import Console
        from rich.progress import Progress as Bar

        from converters import ConversionError
        from edgevit.quiet import backend_output_to_log

        with backend_output_to_log("edgevit-convert") as (log, real_err):
            # A bar only on a terminal: elsewhere it would add a blank line to a failure's one-line message.
            self.bar = Bar(console=Console(file=real_err), disable=not real_err.isatty())
            self.task = self.bar.add_task("converting", total=total)
            try:
                with self.bar:
                    yield log
                    self.bar.update(self.task, completed=total)
            except ConversionError as exc:  # the log explains it: kept, and named
                raise ConversionError(f"{exc} (backend log: {log})") from None
            except BaseException:
                log.unlink(missing_ok=True)
                raise
        log.unlink()


def build(recipe: Recipe, out: Path, force: bool, as_json: bool, explain: bool = False) -> None:
    """`pipeline.run` with console progress, then the manifest as JSON or the bundle's table."""
    from edgevit.console.table import print_table
    from edgevit.pipeline import run

    manifest = run(recipe, out=out, force=force, progress=ConsoleProgress(recipe, explain))
    if as_json:
        print(json.dumps(manifest, indent=2))
    else:
        print_table(manifest, out)
