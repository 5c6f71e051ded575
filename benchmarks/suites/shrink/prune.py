"""Structured pruning on the trained DINOv2-S saliency model: ours against torch-pruning at the same budgets.

Every method removes whole attention heads and MLP channels (the residual width stays) until the model has
lost `--budgets` of its parameters. Ours: `edgevit.compress.prune` with magnitude, activation and Taylor scores,
and Taylor followed by `--recover-steps` of distillation. Peer: torch-pruning's MetaPruner (global ranking,
whole heads via `num_heads`/`prune_num_heads`, the same layers prunable) with its group-L2 magnitude and group
Taylor importance; Taylor needs a loss with a gradient, so it gets BCE against the unpruned model's binarised
saliency map (a label-free pseudo-target); its pruning ratio is bisected until the parameter budget is met.
NNCF is not installed here, so it is not compared. Fidelity is the SQNR of the saliency map against the
unpruned model on held-out photos the scores never saw; latency is the lowered ONNX artifact in ONNX Runtime
(one thread, interleaved rounds).

    OMP_WAIT_POLICY=PASSIVE python -m benchmarks.suites.shrink.prune --out benchmarks/results/
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.cli import publish_results, suite_parser
from benchmarks.machine import describe_machine, load_average
from benchmarks.report import Table
from benchmarks.timing import interleaved, set_threads


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = suite_parser(
        "python -m benchmarks.suites.shrink.prune", __doc__.split("\n")[0], name="shrink_prune", threads=1
    )
    parser.add_argument("--budgets", default="0.3,0.5", help="fractions of parameters removed (default 0.3,0.5)")
    parser.add_argument("--calib", type=int, default=8, help="calibration photos (default 8)")
    parser.add_argument("--held-out", type=int, default=4, help="held-out photos for fidelity (default 4)")
    parser.add_argument("--recover-steps", type=int, default=40, help="distillation steps after taylor (default 40)")
    parser.add_argument("--runs", type=int, default=20, help="timed ONNX Runtime rounds (default 20)")
    args = parser.parse_args(argv)
    args.budgets = [float(b) for b in args.budgets.split(",") if b]
    return args


def ours(score: str, recover_steps: int = 0) -> Callable[[nn.Module, float, list], nn.Module]:
    def prune(model: nn.Module, budget: float, calib: list) -> nn.Module:
        from edgevit.compress.prune import PruneSettings, prune_module

        pruned = copy.deepcopy(model)
        prune_module(pruned, PruneSettings(budget, score=score, recover_steps=recover_steps), calib)
        return pruned

    return prune


def torch_pruning(importance: str) -> Callable[[nn.Module, float, list], nn.Module]:
    """torch-pruning's MetaPruner at the pruning ratio (bisected) that removes `budget` of the parameters."""

    def prune(model: nn.Module, budget: float, calib: list) -> nn.Module:
        from edgevit.compress.prune import count_params

        total, low, high, best = count_params(model), 0.0, 0.95, None
        for _ in range(8):
            ratio = (low + high) / 2
            pruned = _tp_prune(model, ratio, importance, calib)
            removed = 1 - count_params(pruned) / total
            if removed >= budget:
                best, high = pruned, ratio
                if removed < budget + 0.005:
                    break
            else:
                low = ratio
        if best is None:
            raise RuntimeError(f"torch-pruning reached no {budget:g} parameter budget")
        return best

    return prune


def _tp_prune(model: nn.Module, ratio: float, importance: str, calib: list) -> nn.Module:
    import torch_pruning as tp

    pruned = copy.deepcopy(model).eval()
    blocks = pruned.backbone.blocks
    if importance == "taylor":
        imp = tp.importance.GroupTaylorImportance()
        for (x,) in calib:
            with torch.no_grad():
                target = (model(x) > 0.5).float()
            F.binary_cross_entropy(pruned(x).clamp(1e-6, 1 - 1e-6), target).backward()
    else:
        imp = tp.importance.GroupMagnitudeImportance(p=2)
    pruner = tp.pruner.MetaPruner(
        pruned,
        calib[0][0],
        importance=imp,
        pruning_ratio=ratio,
        global_pruning=True,
        ignored_layers=[pruned.backbone.patch_embed, pruned.decoder],  # keeps the residual width, like ours
        num_heads={b.attn.qkv: b.attn.num_heads for b in blocks},
        prune_num_heads=True,
        prune_head_dims=False,
        head_pruning_ratio=ratio,
    )
    pruner.step()
    for b in blocks:
        b.attn.num_heads = pruner.num_heads[b.attn.qkv]
    pruned.zero_grad(set_to_none=True)
    return pruned


METHODS: dict[str, Callable[..., Callable]] = {
    "ours magnitude": lambda a: ours("magnitude"),
    "ours activation": lambda a: ours("activation"),
    "ours taylor": lambda a: ours("taylor"),
    "ours taylor + recovery": lambda a: ours("taylor", a.recover_steps),
    "torch-pruning magnitude": lambda a: torch_pruning("magnitude"),
    "torch-pruning taylor": lambda a: torch_pruning("taylor"),
}


def lowered(model: nn.Module, folder: Path, name: str, threads: int) -> tuple[Any, float]:
    """The model's ONNX artifact in ONNX Runtime, and its SQNR against the eager model (the parity gate's)."""
    from converters.parity import sqnr_db
    from converters.targets.onnx.lower import convert
    from converters.targets.onnx.runner import OnnxRuntimeRunner

    (unit,) = model.deploy_units()
    path = folder / f"{name}.onnx"
    convert(unit, "fp32", path)
    runner = OnnxRuntimeRunner(path, num_threads=threads)
    x = unit.example_inputs[0]
    parity = sqnr_db(unit.run_eager(x)[0].numpy(), np.asarray(runner.run(x.numpy())[0]))
    return runner, parity


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = set_threads(args.threads)
    from edgevit.compress.prune import count_flops, count_params, fidelity_db, outputs
    from edgevit.data.images import load_images
    from edgevit.models import create

    model = create("dinov2_s_focus").eval()
    images, _ = load_images("builtin", model.spec, min_images=args.calib + args.held_out, max_images=64)
    calib = [(x,) for x in images[: args.calib]]
    held = [(x,) for x in images[args.calib : args.calib + args.held_out]]
    reference = outputs(model, held)
    params, flops = count_params(model), count_flops(model, calib[0])
    rows: list[dict[str, Any]] = []
    models = {"unpruned": model}
    for budget in args.budgets:
        for method, make in METHODS.items():
            start = time.perf_counter()
            pruned = make(args)(model, budget, calib)
            seconds = time.perf_counter() - start
            key = f"{method} @ {budget:g}"
            models[key] = pruned
            rows.append({
                "budget": budget,
                "method": method,
                "params_removed": 1 - count_params(pruned) / params,
                "flops_removed": 1 - count_flops(pruned, calib[0]) / flops,
                "sqnr_db": fidelity_db(reference, outputs(pruned, held)),
                "prune_seconds": seconds,
                "key": key,
            })  # fmt: skip
            print(f"{key}: {rows[-1]['sqnr_db']:.2f} dB in {seconds:.0f} s", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="edgevit-prune-bench-") as folder:
        runners, parity = {}, {}
        for i, (key, m) in enumerate(models.items()):
            runners[key], parity[key] = lowered(m, Path(folder), f"m{i}", args.threads)
        x = model.deploy_units()[0].example_inputs[0].numpy()
        stats = interleaved({k: (lambda r=r: r.run(x)) for k, r in runners.items()}, warmup=2, runs=args.runs)
    base_ms = stats["unpruned"].median * 1e3
    table = Table(
        "DINOv2-S saliency: heads and MLP channels pruned to a parameter budget",
        ["budget", "method", "params removed", "FLOPs removed", "SQNR dB (held-out)", "ONNX ms", "× unpruned",
         "ONNX parity dB", "prune s"],
    )  # fmt: skip
    table.rows.append(["0", "unpruned", "0 %", "0 %", "inf", f"{base_ms:.1f}", "1.00", f"{parity['unpruned']:.0f}", ""])
    for row in rows:
        ms = stats[row["key"]].median * 1e3
        row.update({"onnx_ms": ms, "onnx_parity_db": parity[row["key"]], "latency_ratio": ms / base_ms})
        table.rows.append([
            f"{row['budget']:g}", row["method"], f"{100 * row['params_removed']:.1f} %",
            f"{100 * row['flops_removed']:.1f} %", f"{row['sqnr_db']:.2f}", f"{ms:.1f}", f"{ms / base_ms:.2f}",
            f"{row['onnx_parity_db']:.0f}", f"{row['prune_seconds']:.0f}",
        ])  # fmt: skip
    table.notes += [
        f"{args.calib} calibration and {args.held_out} held-out photos (edgevit's builtin set); SQNR of the 224x224 "
        "saliency map against the unpruned model",
        f"ours taylor + recovery: {args.recover_steps} Adam steps (lr 1e-4) distilling on the calibration photos",
        "torch-pruning: pruning ratio bisected to the budget (within 0.5 %); NNCF is not installed here",
        f"ONNX Runtime, {args.threads} thread(s), median of {args.runs} interleaved rounds",
    ]
    machine = describe_machine(("torch", "onnxruntime", "torch-pruning"))
    machine.update(
        {"threads": threads, "load_average": load_average(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    )
    best = {}
    for budget in args.budgets:
        at = [r for r in rows if r["budget"] == budget]
        top = max(at, key=lambda r: r["sqnr_db"])
        peer = max((r for r in at if r["method"].startswith("torch-pruning")), key=lambda r: r["sqnr_db"])
        best[budget] = (
            f"{budget:g}: best {top['method']} {top['sqnr_db']:.2f} dB; "
            f"best peer {peer['method']} {peer['sqnr_db']:.2f} dB"
        )
    latency = {k: s.to_dict() for k, s in stats.items()}
    publish_results(
        args, title="Structured pruning vs torch-pruning (DINOv2-S)", machine=machine,
        tables=[table], summary=list(best.values()), data={"rows": rows, "latency": latency},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
