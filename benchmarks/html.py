"""`edgevit report`: bench results files → one self-contained HTML page, plus the same as JSON and Markdown.

The page carries everything inline (CSS, SVG plots), loads nothing and runs no script, so it opens offline and
can be mailed. Plots: latency per unit × target × precision (× device when several results are given),
fidelity against size, energy where a meter measured it — where none did, the page says "not measured" and
why —, the tracker's FPS and where its frame time goes (from `edgevit track --profile --json` or tracker_fps
suite files given beside the results), its mask IoU against the reference tracker (EfficientTAM bundles), and
per quantized unit whose plan was searched, each layer's sensitivity at the bits it got. Every figure in the
plots is also in the tables below them.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.bench_results import energy_cell, results_tables
from benchmarks.html_plots import (
    energy_plot,
    fidelity_plot,
    finite,
    latency_plot,
    sensitivity_plot,
    tracker_iou_plot,
    tracker_plot,
)
from benchmarks.report import Table, render_markdown
from benchmarks.tracker_runs import PARTS

REPORT_SCHEMA = "edgevit.report"
REPORT_VERSION = 1

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; } h3 { margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f2f2f2; } td:nth-child(-n+3) { text-align: left; }
.note { color: #555; font-size: 12px; } .plot svg { max-width: 100%; height: auto; }
"""


def label(row: dict[str, Any], source: dict[str, Any], many: bool) -> str:
    """unit · target · precision, with the model, its variant and the device (the host, for a local run) when
    several results share a plot: two bundles of one model must not draw as the same label."""
    text = f"{row['unit']} · {row['target']} {row['precision']}"
    if not many:
        return text
    device = source.get("device", "local")
    where = source["machine"]["hostname"] if device == "local" else device
    return f"{source['bundle']['model']} {source['bundle']['variant']}/{text} @ {where}"


def build_report(
    sources: list[tuple[Path, dict[str, Any]]], tracker_runs: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """report.json: every results file whole, the tracker runs, plus the points each plot draws (so it can be
    re-plotted)."""
    many = len(sources) > 1
    latency, fidelity, energy, tracker_iou, sensitivity = [], [], [], [], []
    for _, results in sources:
        where = "" if not many else f" @ {results['machine']['hostname']}"
        for row in (results.get("tracker") or {}).get("rows", []):
            if (iou := finite(row.get("iou_mean"))) is not None:
                name = f"{results['bundle']['model']} {row['target']} {row['precision']}{where}"
                tracker_iou.append({"label": name, "iou_mean": iou, "iou_min": finite(row.get("iou_min"))})
        for unit in (results.get("quant") or {}).get("units", []):
            if unit.get("sensitivity"):
                for layer in unit["layers"]:
                    if (db := finite(layer["sqnr_db"])) is not None:
                        bits = {"weight_bits": layer["weight_bits"], "act_bits": layer["act_bits"]}
                        sensitivity.append({"label": f"{unit['unit']}/{layer['layer']}", "sqnr_db": db, **bits})
        for row in results["rows"]:
            name = label(row, results, many)
            size_mb = row["size_bytes"] / 1e6
            if row["status"] == "ok":
                lat = row["latency"]
                latency.append({"label": name, **{k: lat[k] for k in ("median_ms", "p10_ms", "p90_ms")}})
                if row["energy"].get("measured"):
                    energy.append({"label": name, "mj": row["energy"]["joules_per_inference"] * 1e3})
            if (db := finite(row.get("fidelity", {}).get("min_sqnr_db"))) is not None:
                fidelity.append({"label": name, "size_mb": size_mb, "sqnr_db": db, "kind": "reference"})
            eager = [finite(v) for v in (row["parity_vs_eager_db"] or {}).values()]
            if eager and all(v is not None for v in eager):
                fidelity.append({"label": name, "size_mb": size_mb, "sqnr_db": min(eager), "kind": "eager"})
    return {
        "schema": REPORT_SCHEMA,
        "schema_version": REPORT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "results": [{"path": str(path), **results} for path, results in sources],
        "tracker_runs": tracker_runs or [],
        "plots": {
            "latency": latency,
            "fidelity": fidelity,
            "energy": energy,
            "tracker_fps": tracker_runs or [],
            "tracker_iou": tracker_iou,
            "sensitivity": sensitivity,
        },
    }


def render_html(report: dict[str, Any]) -> str:
    """The page: plots first (what people look at), then per results file its machine and tables."""
    plots = report["plots"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>edgevit bench report</title><style>{CSS}</style></head><body>",
        "<h1>edgevit bench report</h1>",
        f'<p class="note">Written {esc(report["created"])} from {len(report["results"])} results file(s).</p>',
        "<h2>Latency</h2>",
    ]
    parts.append(plot_or_note(plots["latency"], latency_plot, "no artifact ran here"))
    parts += ["<h2>Fidelity against size</h2>"]
    parts.append(plot_or_note(plots["fidelity"], fidelity_plot, "no fidelity figure (nothing ran, no parity)"))
    parts += ["<h2>Energy</h2>"]
    if plots["energy"]:
        parts.append(f'<div class="plot">{energy_plot(plots["energy"])}</div>')
    for results in report["results"]:
        if not plots["energy"] or not results["energy"].get("measured"):
            parts.append(f"<p>{esc(results['machine']['hostname'])}: {esc(energy_cell(results['energy']))}</p>")
    if plots["tracker_fps"]:
        parts += [
            "<h2>Tracker FPS and time per frame</h2>",
            f'<div class="plot">{tracker_plot(plots["tracker_fps"])}</div>',
        ]
        parts += html_table(tracker_table(plots["tracker_fps"]))
    if plots["tracker_iou"]:
        parts += ["<h2>Tracker mask IoU against the reference</h2>"]
        parts.append(f'<div class="plot">{tracker_iou_plot(plots["tracker_iou"])}</div>')
    if plots["sensitivity"]:
        parts += ["<h2>Mixed-precision sensitivity</h2>"]
        parts.append(f'<div class="plot">{sensitivity_plot(plots["sensitivity"])}</div>')
        parts.append('<p class="note">Per layer: output SQNR with that layer alone quantized at the bits the plan '
                     "gave it (the full tables are in each results section below).</p>")  # fmt: skip
    for results in report["results"]:
        parts += source_section(results)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def plot_or_note(points: list[dict[str, Any]], plot: Any, note: str) -> str:
    return f'<div class="plot">{plot(points)}</div>' if points else f"<p>{esc(note)}</p>"


def source_section(results: dict[str, Any]) -> list[str]:
    """One results file: what was benched where, the harness overhead, the tables."""
    bundle, machine = results["bundle"], results["machine"]
    head = f"{bundle['model']} {bundle['variant']} on {machine['hostname']} ({results['device']})"
    facts = [
        f"bundle {bundle['path']} (weights: {bundle['weights']}; passes: {', '.join(bundle['passes']) or 'none'})",
        f"benched {results['created']}; CPU {machine['cpu_model']}, {machine['cores_available']} cores available, "
        f"load average {machine['load_average']}; threads requested: {results['settings']['threads'] or 'all'}",
        f"harness overhead: {results['overhead'].get('summary', 'not measured')}",
    ]
    out = [f"<h2>{esc(head)}</h2>", "<ul>", *(f"<li>{esc(f)}</li>" for f in facts), "</ul>"]
    for table in results_tables(results):
        out += html_table(table)
    return out


def html_table(table: Table) -> list[str]:
    cells = lambda row, tag: "".join(f"<{tag}>{esc('' if c is None else c)}</{tag}>" for c in row)  # noqa: E731
    return [
        f"<h3>{esc(table.title)}</h3><table>",
        f"<tr>{cells(table.columns, 'th')}</tr>",
        *(f"<tr>{cells(row, 'td')}</tr>" for row in table.rows),
        "</table>",
        *(f'<p class="note">{esc(n)}</p>' for n in table.notes),
    ]


def tracker_table(runs: list[dict[str, Any]]) -> Table:
    """FPS, frame time and median ms per unit of every tracker run (the tracker FPS plot's figures)."""
    table = Table("Tracker FPS", ["tracker", "FPS", "frame ms", "p90 ms", *PARTS, "frames", "source"])
    for run in runs:
        units = [_ms(run["units_ms"].get(p)) for p in PARTS]
        table.rows.append([run["label"], _ms(run["fps"]), _ms(run["frame_ms"]), _ms(run["p90_ms"]), *units,
                           run.get("frames_measured"), Path(run["source"]).name])  # fmt: skip
    table.notes = [
        "medians over the measured frames (frame 0, the prompted one, left out); loop = frame minus its units; "
        "from `edgevit track --profile --json` or the tracker_fps suite"
    ]
    return table


def _ms(value: Any) -> str | None:
    return None if value is None else f"{float(value):.3g}"


def render_markdown_report(report: dict[str, Any]) -> str:
    """The tables of every results file as Markdown (the plots' figures are all in them)."""
    parts = []
    if report.get("tracker_runs"):
        table = tracker_table(report["tracker_runs"])
        lines = ["# Tracker FPS", "", "| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
        lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in table.rows]
        parts.append("\n".join([*lines, "", *(f"- {n}" for n in table.notes), ""]))
    for results in report["results"]:
        bundle = results["bundle"]
        title = f"{bundle['model']} {bundle['variant']} on {results['machine']['hostname']} ({results['device']})"
        summary = [
            f"bundle {bundle['path']}",
            f"energy: {energy_cell(results['energy'])}",
            f"harness overhead: {results['overhead'].get('summary', 'not measured')}",
        ]
        parts.append(render_markdown(title, results["created"], results["machine"], results_tables(results), summary))
    return "\n".join(parts)


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)
