"""`edgevit report`: bench results files → `report.html` (self-contained), with `report.json` and `report.md`
beside it (same stem). Tracker FPS files (`edgevit track --profile --json` output, the tracker_fps suite's
results JSON) may be given among them: their runs get the page's tracker FPS section. Every file is written to
a temporary sibling and renamed in; all three are checked before any is written, so an existing one without
--force refuses the whole run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgevit.errors import EdgevitError


def report(results: list[Path], out: Path, force: bool) -> None:
    from benchmarks.bench_results import ResultsError, load_results
    from benchmarks.html import build_report, render_html, render_markdown_report
    from benchmarks.report import json_safe
    from benchmarks.tracker_runs import is_tracker_file, tracker_runs
    from converters.bundle import atomic_file, check_file_out, release_claims

    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise EdgevitError(f"--out {out} must name the .html page (e.g. --out report.html)")
    outputs = {
        kind: out.with_suffix(suffix) for kind, suffix in (("html", out.suffix), ("json", ".json"), ("md", ".md"))
    }
    given = {Path(p).resolve() for p in results}
    if any(path.resolve() in given for path in outputs.values()):
        raise EdgevitError(f"--out {out} would overwrite an input results file; choose another --out")
    sources, runs = [], []
    try:
        for path in map(Path, results):
            data = _json_or_none(path)
            if is_tracker_file(data):
                runs += tracker_runs(path, data)
            else:
                sources.append((path, load_results(path)))
    except ResultsError as exc:
        raise EdgevitError(str(exc)) from None
    for path in outputs.values():
        check_file_out(path, force)
    page = build_report(sources, runs)
    texts = {
        "html": render_html(page),
        "json": json.dumps(json_safe(page), indent=1, allow_nan=False) + "\n",
        "md": render_markdown_report(page),
    }
    try:
        for kind, path in outputs.items():
            with atomic_file(path, force) as tmp:
                tmp.write_text(texts[kind], encoding="utf-8")
    finally:
        release_claims()
    rows = f"{len(page['plots']['latency'])} latency rows" + (f", {len(runs)} tracker runs" if runs else "")
    print(f"wrote {outputs['html']} ({rows}), {outputs['json']}, {outputs['md']}")


def _json_or_none(path: Path) -> object:
    """The file's JSON, or None (load_results then names what is wrong with it)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def report_cmd(
    results: Annotated[
        list[Path],
        typer.Argument(
            help="Results files written by `edgevit bench --out`, and tracker FPS files (`edgevit track --profile "
            "--json` output, benchmarks/results/tracker_fps.json)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="The HTML page; report.json and report.md go beside it.")] = Path(
        "report.html"
    ),
    force: Annotated[bool, typer.Option(help="Replace existing report files.")] = False,
) -> None:
    """Write one self-contained HTML page (plots inline, works offline) plus JSON and Markdown from bench results.

    Example: edgevit report results.json --out report.html
    """
    report(results, out, force)
