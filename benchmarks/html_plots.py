"""The report's plots as inline SVG (matplotlib's SVG backend, no browser scripts, nothing fetched).

Every data point is drawn as its own artist with an id (`<g id="latency-point-3">`), so a reader's tool (or a
test) can tell a plot with data from an empty frame. The SVG is cut down to what an HTML page needs inline: no
XML declaration, DOCTYPE (it names an external DTD), metadata block or namespace declarations (the HTML parser
puts inline `<svg>` in the SVG namespace itself).
"""

from __future__ import annotations

import io
import math
import re
from typing import Any

import matplotlib

matplotlib.use("svg")  # no display, and the only backend used here

import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"svg.fonttype": "none", "svg.hashsalt": "edgevit", "font.size": 9}


def to_svg(fig: Any) -> str:
    """The figure as an `<svg>` element fit for inlining in HTML."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None, "Format": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    return re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text, count=0)


def latency_plot(points: list[dict[str, Any]]) -> str:
    """Horizontal bars: median latency per row label, whiskers from p10 to p90 where the tool gave samples (a
    device tool that prints only a mean has none). A log axis when medians span more than 20x, so a 0.3 ms unit
    is not a hairline beside a 70 ms one."""
    medians = [p["median_ms"] for p in points]
    log = max(medians) > 20 * min(medians) > 0
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(points) + 1.2))
        for i, p in enumerate(points):
            y = len(points) - 1 - i
            ax.barh(y, p["median_ms"], color="#4a78b5", gid=f"latency-point-{i}")
            if p.get("p10_ms") is not None and p.get("p90_ms") is not None:
                low, high = p["median_ms"] - p["p10_ms"], p["p90_ms"] - p["median_ms"]
                ax.errorbar(p["median_ms"], y, xerr=[[low], [high]], color="#222", capsize=3, lw=1)
        ax.set_yticks(range(len(points)), [p["label"] for p in reversed(points)])
        ax.set_xlabel(f"latency, ms{' (log scale)' if log else ''} (bar: median; whiskers: p10-p90)")
        if log:
            ax.set_xscale("log")
        else:
            ax.set_xlim(left=0)
        ax.grid(axis="x", alpha=0.3)
        return to_svg(fig)


def fidelity_plot(points: list[dict[str, Any]]) -> str:
    """Fidelity (SQNR, dB) against artifact size (MB): vs the bundle's fp32 reference artifact measured by
    bench (filled), and vs eager PyTorch as recorded at conversion (hollow)."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7, 4))
        kinds = {
            "reference": ("o", "#c0504d", "vs fp32 artifact (bench)"),
            "eager": ("s", "none", "vs eager (manifest)"),
        }
        labelled = set()
        for i, p in enumerate(points):
            marker, face, legend = kinds[p["kind"]]
            ax.plot([p["size_mb"]], [p["sqnr_db"]], marker, mfc=face, mec="#333", ms=7, gid=f"fidelity-point-{i}",
                    label=None if p["kind"] in labelled else legend)  # fmt: skip
            labelled.add(p["kind"])
            ax.annotate(p["label"], (p["size_mb"], p["sqnr_db"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.set_xlabel("artifact size, MB")
        ax.set_ylabel("SQNR, dB (min over outputs)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        return to_svg(fig)


def energy_plot(points: list[dict[str, Any]]) -> str:
    """Bars of millijoules per inference (idle baseline subtracted), one per measured row."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(points) + 1.2))
        for i, p in enumerate(points):
            ax.barh(len(points) - 1 - i, p["mj"], color="#6a9f58", gid=f"energy-point-{i}")
        ax.set_yticks(range(len(points)), [p["label"] for p in reversed(points)])
        ax.set_xlabel("energy per inference, mJ (idle baseline subtracted)")
        ax.grid(axis="x", alpha=0.3)
        return to_svg(fig)


def finite(value: Any) -> float | None:
    """A float from a figure that may be the strings "inf"/"nan" of strict JSON; None when not finite."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
