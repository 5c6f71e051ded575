"""The quantization suite's tables, computed from the (merged) results data alone.

Everything here reads the plain rows the suite's sections store, so a results file filled by several
runs is tabulated and judged as one, and re-tabulating needs no model code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from benchmarks.report import Table

DINOV2 = "dinov2_s_focus"
ENCODER = "efficienttam_s_512"
# The goals.
MARGIN_OVER_PEER_DB = 3.0
MIXED_MAX_FRACTION, MIXED_MAX_LOSS_DB = 0.6, 1.0
ENCODER_SPEEDUP = 2.0  # issue 13: any int8 artifact
STATIC_ONNX_SPEEDUP, STATIC_ONNX_MIN_SQNR_DB = 2.5, 30.0  # issue 14: static int8 on ONNX Runtime
_MB = 1e6


_BITS_ORDER = {"W8A8": 0, "W6A6": 1, "W4A8": 2}


def rows_of(models: dict[str, Any], section: str) -> Iterator[dict[str, Any]]:
    """A section's rows, model by model; within a model ours first, then by method, variant and bits."""
    for entry in models.values():
        rows = entry["sections"].get(section, {}).get("rows", [])
        yield from sorted(rows, key=_row_order) if section != "deploy" else rows


def _row_order(r: dict[str, Any]) -> tuple:
    return (r.get("origin") != "ours", r.get("method") or "", r.get("variant") or "", _BITS_ORDER.get(r.get("bits"), 9))


def _mb(value: int | None) -> float | None:
    return None if value is None else value / _MB


def _outcome(r: dict[str, Any]) -> str:
    if r["status"] == "failed":
        return f"failed: {r['error']}"
    return r.get("note") or ""


def uniform_table(models: dict[str, Any]) -> Table:
    table = Table(
        title="Uniform bits: output SQNR vs fp32 on held-out images (same calibration images for every method)",
        columns=[
            "model",
            "who",
            "method",
            "variant",
            "bits",
            "evaluated in",
            "SQNR dB",
            "video SQNR dB",
            "top-1 agree",
            "accuracy",
            "int weights MB",
            "s",
            "note",
        ],
        notes=[
            "SQNR over every output value of every held-out image vs the fp32 model; video SQNR over the held-out "
            "video frames alone (packaged models); top-1 agreement with fp32's arg-max (classifiers); accuracy "
            "against true labels where the model has them (digits).",
            "int weights MB: ours = packed payload of the plan's quantized weights at their bits; peers = the "
            "integer weight bytes their artifact stores (the PT2E graph stores 4/6-bit ranges as int8).",
            "ours run as fake-quant in torch (the plan the converters lower; deploy shows the real artifacts); "
            "onnxruntime and AI Edge Quantizer rows run their own artifact in its runtime.",
            "unsupported: the peer cannot express that bit-width (reason in the note, from the peer's own API).",
        ],
    )
    for r in rows_of(models, "uniform"):
        table.rows.append(
            [
                r["model"],
                r["origin"],
                r["method"],
                r["variant"],
                r["bits"],
                r["evaluated"],
                r.get("sqnr_db"),
                r.get("video_sqnr_db"),
                r.get("top1_agreement"),
                r.get("accuracy"),
                _mb(r.get("weight_bytes")),
                r.get("seconds"),
                _outcome(r),
            ]
        )
    return table


def mixed_table(models: dict[str, Any]) -> Table:
    table = Table(
        title=f"Mixed precision (greedy, 4/6/8-bit weights, 8-bit activations): goal within {MIXED_MAX_LOSS_DB:g} dB "
        f"of W8A8 at <= {MIXED_MAX_FRACTION:.0%} of its weight bytes",
        columns=[
            "model",
            "method",
            "budget",
            "weights MB",
            "of W8A8",
            "weight bits (layers)",
            "SQNR dB",
            "W8A8 SQNR dB",
            "Δ dB",
            "top-1 agree",
            "predicted dB",
            "note",
        ],
        notes=[
            "One sensitivity table per model (one layer quantized at a time on 4 calibration images) serves "
            "every budget; 'predicted' adds the table's per-layer noise powers.",
        ],
    )
    for r in rows_of(models, "mixed"):
        ok = r["status"] == "ok"
        table.rows.append(
            [
                r["model"],
                r["method"],
                r.get("variant"),
                _mb(r.get("weight_bytes")),
                f"{r['weight_bytes'] / r['w8a8_weight_bytes']:.0%}" if ok else None,
                ", ".join(f"W{b}×{n}" for b, n in r.get("weight_bits", {}).items()) if ok else None,
                r.get("sqnr_db"),
                r.get("w8a8_sqnr_db"),
                r["sqnr_db"] - r["w8a8_sqnr_db"] if ok else None,
                r.get("top1_agreement"),
                r.get("predicted_sqnr_db"),
                _outcome(r),
            ]
        )
    return table


def timings(models: dict[str, Any], model: str) -> list[dict[str, Any]]:
    """The model's timing rows, one per thread count."""
    rows = models[model]["sections"].get("deploy", {}).get("rows", [])
    return [r for r in rows if r.get("kind") == "timing" and r["status"] == "ok"]


def activations_of(r: dict[str, Any]) -> str:
    """How an artifact's GEMM inputs are quantized: ours are static on onnx only (see the deploy table's notes)."""
    if r["origin"] == "fp32":
        return "fp32"
    return "dynamic" if r["origin"] == "ours" and r["target"] != "onnx" else "static"


def deploy_table(models: dict[str, Any]) -> Table:
    table = Table(
        title="Deployed artifacts: SQNR measured in their runtime, latency side by side with eager fp32",
        columns=[
            "model",
            "threads",
            "target",
            "artifact",
            "bits",
            "activations",
            "SQNR dB",
            "top-1 agree",
            "file MB",
            "median ms",
            "p10–p90 ms",
            "× eager",
            "× fp32 artifact",
            "note",
        ],
        notes=[
            "× eager / × fp32 artifact: median over the eager fp32 median (resp. the same target's fp32 artifact) "
            "measured in the same interleaved rounds; below 1 is faster.",
            "ours on onnx is static W8A8 QDQ from the plan; on executorch and tflite the converters run the plan's "
            "int8 (or 4-bit) weights with activations quantized at run time (XNNPACK qd8 / LiteRT dynamic range), "
            "because static int8 GEMMs there need int8 outputs (see quant/pt2e.py). Every peer artifact is static.",
            "Runner times include copying numpy inputs in and outputs out, as an app pays; eager gets tensors.",
        ],
    )
    for model, entry in models.items():
        rows = [r for r in entry["sections"].get("deploy", {}).get("rows", []) if r.get("kind") == "artifact"]
        for timing in timings(models, model) or [None]:
            table.rows.extend(_deploy_rows(model, rows, timing))
        if rows:
            coreml = (
                "not run: Core ML prediction needs macOS (this is Linux); `edgevit quantize --target coreml` converts"
            )
            table.rows.append([model, None, "coreml", *[None] * 10, coreml])
    return table


def _deploy_rows(model: str, rows: list[dict[str, Any]], timing: dict[str, Any] | None) -> list[list[Any]]:
    """One table row per artifact (and eager first) at one thread count."""
    stats = timing["stats"] if timing else {}
    threads = timing["threads"] if timing else None
    eager = stats.get("eager fp32")
    out = []
    if eager:
        out.append([model, threads, "eager", "PyTorch fp32", "fp32", "fp32", None, None, None])
        out[-1] += [*_times(eager, eager, None), ""]
    for r in rows:
        fp32 = stats.get(f"{r['target']} fp32") if r["origin"] != "fp32" else None
        name = "fp32" if r["origin"] == "fp32" else f"{r['origin']}: {r['method']} ({r['variant']})"
        note = _outcome(r) if r["status"] != "ok" else facts_note(r.get("facts", {}))
        figures = [r.get("sqnr_db"), r.get("top1_agreement"), _mb(r.get("file_bytes"))]
        acts = activations_of(r) if r["status"] == "ok" else None
        cells = _times(stats.get(r.get("label")), eager, fp32)
        out.append([model, threads, r["target"], name, r["bits"], acts, *figures, *cells, note])
    return out


def _times(stats: dict | None, eager: dict | None, fp32: dict | None) -> list[Any]:
    if not stats:
        return [None, None, None, None]
    median = stats["median_ms"]
    return [
        median,
        f"{stats['p10_ms']:.1f}–{stats['p90_ms']:.1f}",
        median / eager["median_ms"] if eager else None,
        median / fp32["median_ms"] if fp32 else None,
    ]


def facts_note(facts: dict[str, Any]) -> str:
    parts = []
    if kernels := facts.get("ort_int8_kernels"):
        parts.append("ORT int8: " + ", ".join(f"{k}×{v}" for k, v in kernels.items()))
    elif "ort_int8_kernels" in facts:
        parts.append("ORT int8: none")
    if gemms := facts.get("ort_float_gemms"):
        parts.append("float: " + ", ".join(f"{k}×{v}" for k, v in gemms.items()))
    if facts.get("dequantize_nodes"):
        parts.append(f"{facts['dequantize_nodes']} DequantizeLinear left")
    if "delegated_subgraphs" in facts:
        ops = facts.get("undelegated_ops") or {}
        parts.append(f"{facts['delegated_subgraphs']} XNNPACK subgraphs; undelegated {sum(ops.values())}")
    if "quantize_ops" in facts:
        parts.append(f"{facts['quantize_ops']} QUANTIZE / {facts['dequantize_ops']} DEQUANTIZE ops")
    return "; ".join(parts)


def subjects_table(models: dict[str, Any]) -> Table:
    table = Table(
        title="Models and images",
        columns=["model", "parameters", "weights", "input", "calibration", "held out", "labels", "note"],
        notes=["Calibration and held-out images come from different source files (photos and video clips)."],
    )
    for entry in models.values():
        s = entry["subject"]
        metrics = s.get("student_metrics") or {}
        parts = [s.get("note"), f"teacher {s['teacher']}" if s.get("teacher") else None]
        parts += [f"{k} {v:.3g}" for k, v in metrics.items() if "agreement" in k or "accuracy" in k]
        note = "; ".join(p for p in parts if p)
        table.rows.append(
            [
                s["name"],
                f"{s['parameters'] / 1e6:.2f} M",
                s["weights"],
                "×".join(map(str, s["input_shape"])),
                f"{s['calibration_images']}: {s['sources']['calibration']}",
                f"{s['held_out_images']}: {s['sources']['held_out']}",
                s["labels"],
                note,
            ]
        )
    return table


def tables(models: dict[str, Any]) -> list[Table]:
    found = (subjects_table(models), uniform_table(models), mixed_table(models), deploy_table(models))
    return [t for t in found if t.rows]
