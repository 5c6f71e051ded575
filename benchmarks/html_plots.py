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


TRACKER_COLOURS = {"image_encoder": "#4a78b5", "memory_attention": "#c0504d", "prompt_mask_decoder": "#9bbb59",
                   "memory_encoder": "#8064a2", "loop": "#999999"}  # fmt: skip


def tracker_plot(runs: list[dict[str, Any]]) -> str:
    """One stacked bar per tracker run: the median ms of each unit and of the loop (each segment its own point),
    the run's FPS written at the end of its bar."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7, 0.4 * len(runs) + 1.4))
        labelled = set()
        for i, run in enumerate(runs):
            y, left = len(runs) - 1 - i, 0.0
            for j, (part, ms) in enumerate(run["units_ms"].items()):
                legend = None if part in labelled else part.replace("_", " ")
                ax.barh(y, ms, left=left, color=TRACKER_COLOURS.get(part, "#333"), gid=f"tracker-point-{i}-{j}",
                        label=legend)  # fmt: skip
                labelled.add(part)
                left += ms
            ax.annotate(f"{run['fps']:.3g} FPS", (left, y), xytext=(4, -3), textcoords="offset points", fontsize=7)
        ax.set_yticks(range(len(runs)), [r["label"] for r in reversed(runs)])
        ax.set_xlabel("median ms per frame, by unit (frame 0 left out)")
        ax.set_xlim(left=0, right=max(sum(r["units_ms"].values()) for r in runs) * 1.2)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=5, fontsize=7, frameon=False)
        return to_svg(fig)


def tracker_iou_plot(points: list[dict[str, Any]]) -> str:
    """Mean mask IoU of each converted tracker against the reference tracker (whisker down to the minimum)."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(points) + 1.2))
        for i, p in enumerate(points):
            y = len(points) - 1 - i
            ax.barh(y, p["iou_mean"], color="#4a78b5", gid=f"tracker-iou-point-{i}")
            if p.get("iou_min") is not None:
                ax.errorbar(p["iou_mean"], y, xerr=[[p["iou_mean"] - p["iou_min"]], [0]], color="#222", capsize=3)
        ax.set_yticks(range(len(points)), [p["label"] for p in reversed(points)])
        ax.set_xlim(0, 1.02)
        ax.set_xlabel("mask IoU vs the reference tracker (bar: mean over frames; whisker: minimum)")
        ax.grid(axis="x", alpha=0.3)
        return to_svg(fig)


def sensitivity_plot(points: list[dict[str, Any]]) -> str:
    """Per layer of a searched plan, the output SQNR with it alone quantized at its chosen bits, coloured by
    weight bits: the layers that cost the most fidelity are the short bars."""
    colours = {2: "#7f2704", 3: "#d94801", 4: "#fd8d3c", 6: "#6baed6", 8: "#2171b5", None: "#999999"}
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7, 0.22 * len(points) + 1.4))
        labelled = set()
        for i, p in enumerate(points):
            bits = p["weight_bits"]
            legend = None if bits in labelled else (f"W{bits}" if bits else "activations only")
            ax.barh(len(points) - 1 - i, p["sqnr_db"], color=colours.get(bits, "#333"), gid=f"sensitivity-point-{i}",
                    label=legend)  # fmt: skip
            labelled.add(bits)
        ax.set_yticks(range(len(points)), [p["label"] for p in reversed(points)], fontsize=6)
        ax.set_xlabel("output SQNR, dB, with only this layer quantized at its planned bits")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
        return to_svg(fig)
