"""MatFormer at our scale: sub-models extracted from one MatViT against the same architectures trained alone.

One MatViT (`matvit mini_32`, 0.21 M parameters) is trained on the digits with MatFormer's per-step sampling of
MLP widths. From it come the four uniform sub-models (every MLP at 1/8, 1/4, 1/2, 1) and Mix'n'Match sub-models
chosen by the matformer pass under parameter budgets between them. Each architecture is also built fresh and
trained alone with the same schedule and as many steps as the whole MatFormer run (so the independent family
costs one MatFormer run per member). Accuracy is on the held-out digits (never trained or selected on), latency
through ONNX Runtime on one thread. The paper (Kudugunta et al. 2023) claims extracted ≈ independently trained,
on ViT-B/L and ImageNet; this is a 4-block model on 8x8 digits, so only the comparison's shape carries over.

    OMP_WAIT_POLICY=PASSIVE python -m benchmarks.suites.shrink.matformer --out benchmarks/results/
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch

from benchmarks.cli import publish_results, run_conditions, suite_parser
from benchmarks.machine import describe_machine
from benchmarks.report import Table
from benchmarks.timing import set_threads


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = suite_parser(
        "python -m benchmarks.suites.shrink.matformer", __doc__.split("\n")[0], name="shrink_matformer"
    )
    parser.add_argument("--epochs", type=int, default=30, help="epochs of every training run (default 30)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds; each trains everything again")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    return args


def choices(model, data) -> list[tuple[str, list[int]]]:
    """The uniform sub-models, then what Mix'n'Match picks at budgets halfway between their sizes."""
    from edgevit.pipeline.passes import PassData
    from edgevit.pipeline.passes.extract import MatFormerConfig, apply

    count, depth = len(model.cfg.granularities), model.cfg.depth
    found = [(f"uniform {f:g}", [g] * depth) for g, f in enumerate(model.cfg.granularities)]
    sizes = [model.parameter_count(g) for g in range(count)]
    for low, high in zip(sizes, sizes[1:], strict=False):
        budget = (low + high) / 2 / 1e6
        _, record = apply(model.deploy_units(), MatFormerConfig(budget_mparams=budget), PassData(("onnx",)))
        found.append((f"Mix'n'Match ≤ {budget:.3f} M", record.info["levels"]))
    return found


def run_seed(seed: int, epochs: int) -> list[dict[str, Any]]:
    from edgevit.compress.matformer import MatTrainConfig, measure_ms, train_matvit
    from edgevit.compress.matformer.train import accuracy
    from edgevit.data.labelled import load_labelled
    from edgevit.models import create
    from edgevit.models.spec import count_parameters
    from edgevit.training.distill import TrainConfig, train

    cfg = MatTrainConfig(epochs=epochs)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = create("matvit", "mini_32")
    data = load_labelled("builtin", model.spec)
    mat = train_matvit(model, data, cfg, seed=seed)
    rows = []
    for label, levels in choices(model, data):
        extracted = model.extract(levels)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            alone = create("matvit", "mini_32").extract(levels)  # the same architecture, freshly initialised
        schedule = TrainConfig(epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay)
        result = train(alone, data.train.images, data.train.labels, schedule, seed=seed, description=label)
        rows.append(
            {
                "seed": seed,
                "choice": label,
                "levels": levels,
                "widths": [model.cfg.hidden_widths[g] for g in levels],
                "params": count_parameters(extracted),
                "extracted_accuracy": accuracy(extracted, data.test.images, data.test.labels),
                "independent_accuracy": accuracy(alone, data.test.images, data.test.labels),
                "onnx_ms": measure_ms(extracted),
                "matformer_steps": len(mat.losses),
                "independent_steps": len(result.losses),
                "matformer_seconds": mat.metrics["train_seconds"],
                "independent_seconds": result.seconds,
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> Table:
    t = Table(
        "Extracted from one MatViT vs trained alone (held-out digits)",
        ["seed", "sub-model", "MLP width per block", "params", "ONNX ms", "extracted top-1", "alone top-1", "Δ"],
    )
    for r in rows:
        widths = "/".join(map(str, r["widths"]))
        delta = 100 * (r["extracted_accuracy"] - r["independent_accuracy"])
        t.rows.append([r["seed"], r["choice"], widths, r["params"], r["onnx_ms"],
                       f"{100 * r['extracted_accuracy']:.1f} %", f"{100 * r['independent_accuracy']:.1f} %",
                       f"{delta:+.1f} pt"])  # fmt: skip
    t.notes.append("Δ: extracted minus alone, in accuracy points; 359 test digits, so one digit is 0.28 pt.")
    return t


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = set_threads(1)
    machine = describe_machine()
    started = time.perf_counter()
    rows = [row for seed in args.seeds for row in run_seed(seed, args.epochs)]
    deltas = [100 * (r["extracted_accuracy"] - r["independent_accuracy"]) for r in rows]
    steps = rows[0]["matformer_steps"]
    summary = [
        f"One MatFormer run ({steps} steps, {rows[0]['matformer_seconds']:.0f} s) gives every row's extracted model; "
        f"each 'alone' model had its own {rows[0]['independent_steps']} steps.",
        f"Extracted minus alone: mean {sum(deltas) / len(deltas):+.1f} pt, range {min(deltas):+.1f} to "
        f"{max(deltas):+.1f} pt over {len(rows)} sub-models.",
        run_conditions(threads, machine["load_average"], started),
    ]
    publish_results(
        args,
        title="MatFormer: Mix'n'Match extraction vs independent training",
        machine=machine,
        tables=[table(rows)],
        summary=summary,
        data={"rows": rows},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
