"""Which 4-bit weight grid holds up: per-channel min-max vs group-wise min-max / MSE scales vs MSE + GPTQ.

`w4_variants(model, calib, held_out)` returns one row per (grid, group size, activations) with the held-out output
SQNR against fp32, for W4A8 (the plan's static 8-bit input grids) and W4 weight-only (inputs float). It uses the
quant pass's own steps (`quant_recipe.prepare`: BN folded, min-max activation ranges), so W4P's peers benchmark
can call it beside onnxruntime's, torchao's and AI Edge Quantizer's 4-bit paths.

Run: `python -m benchmarks.suites.quant.w4_grid [--groups 32 64 128] [--calib 16] [--held 16]` (DINOv2-S, the quant
suite's images: calibration photos + bikes.mp4 frames, held out sklearn photos + bigbuckbunny.mp4 frames).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from quant.fake_quant import apply_plan
from quant.gptq import gptq_
from quant.groupwise import fake_quantize_weight
from quant.metrics import model_outputs, outputs_sqnr
from quant.plan import QuantPlan


def weight_only(model: nn.Module, plan: QuantPlan) -> nn.Module:
    """A copy of `model` whose planned weights are fake-quantized as the plan says; every input stays float."""
    out = copy.deepcopy(model)
    for name, layer in plan.layers.items():
        if layer.weight is not None:
            module = out.get_submodule(name)
            module.weight.data.copy_(fake_quantize_weight(module.weight.detach(), layer.weight))
    return out


def w4_variants(
    model: nn.Module,
    calib: Sequence[Tensor],
    held_out: Sequence[Tensor],
    group_sizes: Sequence[int] = (32, 64, 128),
    method: str = "ptq",
    gptq_kwargs: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Held-out SQNR (dB vs fp32) of each 4-bit weight grid, W4A8 and W4 weight-only, on one prepared model."""
    from edgevit.pipeline.passes import quant_recipe as recipe

    prepared = recipe.prepare(method, model, list(calib), (4, 8))
    reference = model_outputs(prepared.module, held_out)
    rows: list[dict[str, Any]] = []

    def score(grid: str, group: int | None, module: nn.Module, plan: QuantPlan, seconds: float) -> None:
        for acts, test in (("A8", apply_plan(module, plan)), ("weight-only", weight_only(module, plan))):
            sqnr = outputs_sqnr(reference, model_outputs(test, held_out))
            rows.append(
                {
                    "grid": grid,
                    "group_size": group,
                    "activations": acts,
                    "sqnr_db": round(sqnr, 2),
                    "weight_bytes": plan.weight_bytes(),
                    "seconds": round(seconds, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)

    start = time.perf_counter()
    prepared.stats.use_groups({})
    score("per-channel min-max", None, prepared.module, prepared.stats.plan(4, 8), time.perf_counter() - start)
    for group in group_sizes:
        for scales in ("minmax", "mse"):
            start = time.perf_counter()
            plan = prepared.stats.use_groups({4: group}, scales).plan(4, 8)
            score(f"group {scales}", group, prepared.module, plan, time.perf_counter() - start)
        start = time.perf_counter()
        rounded = copy.deepcopy(prepared.module)
        plan = prepared.stats.plan(4, 8)  # group MSE: scales come from the original weights (static groups)
        gptq_(rounded, plan, list(calib), **(gptq_kwargs or {}))
        score("group mse + gptq", group, rounded, plan, time.perf_counter() - start)
    prepared.stats.use_groups({})
    return rows


def main() -> None:
    from benchmarks.suites.quant.subjects import loader

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dinov2_s_focus")
    parser.add_argument("--groups", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--calib", type=int, default=16)
    parser.add_argument("--held", type=int, default=16)
    parser.add_argument("--frames", type=int, default=14)
    args = parser.parse_args()
    torch.set_num_threads(2)
    subject = loader(args.model, args.frames, (args.calib, args.held), None)()
    w4_variants(subject.model, subject.calib, subject.held_out, args.groups)


if __name__ == "__main__":
    main()
