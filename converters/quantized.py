"""A `QuantPlan` lowered to real integer artifacts: `convert_quantized(unit, target, plan, out_dir) -> Artifact`.

Each target takes the plan in the form its runtime turns into integer kernels; how, and why, is told in its
`converters/targets/<name>/quantized.py`. In short: onnx writes QDQ (and ConvInteger) from the plan's qparams,
executorch and tflite take the plan's weights with activations quantized at run time (XNNPACK qd8 GEMMs,
LiteRT dynamic range), coreml holds the plan's weights and activation grids (W8A8, int4, 6-bit palettes).
What each target holds is in the registry (`weight_bits`, `act_bits`, `activations`).

Parity is gated against each artifact's reference, the torch model computing what the target should:
the fake-quant model (`quant.fake_quant.apply_plan`, the thing calibration and mixed precision judged) for
onnx, the PT2E graph with dynamic activations for executorch and tflite, the PT2E graph with the plan's
activation grids (the fake-quant model, written as q/dq ops) for coreml. SQNR against the plan's fake-quant
model and against fp32 is reported beside it: with dynamic activations an artifact is usually *closer* to
fp32 than the plan's static grids are, so the distance to fake-quant is no test of the lowering there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from converters.artifact import Artifact, OutputParity, TargetResult
from converters.base import check_unit, lowering_error, stage_artifact
from converters.errors import ConversionError, RuntimeUnavailableError
from converters.parity import max_abs_diff, run_artifact, sqnr_db
from converters.runtime import load_runner
from converters.targets.registry import TARGET_INFO, TARGETS, held_bits, target_info
from converters.unit import DeployUnit
from quant.errors import QuantError
from quant.fake_quant import apply_plan
from quant.plan import QuantPlan

__all__ = [
    "ACT_BITS",
    "MIN_SQNR_VS_REFERENCE_DB",
    "WEIGHT_BITS",
    "convert_quantized",
    "held_bits",
    "precision_for",
]

# Weight and activation bit-widths each target holds natively, from the registry.
WEIGHT_BITS: dict[str, tuple[int, ...]] = {name: info.weight_bits for name, info in TARGET_INFO.items()}
ACT_BITS: dict[str, tuple[int, ...]] = {name: info.act_bits for name, info in TARGET_INFO.items()}

# Why 25 dB and not the 60 dB of an fp32 lowering: a quantized network is chaotic in its rounding. Two
# correct int8 implementations of one plan differ wherever a value lands within float error of a rounding
# boundary, and each flip is one activation step that later layers pass on. Measured on the real DINOv2-S
# (W8A8 min/max, 12 calibration photos): the PT2E q/dq graph, identical to fake-quant layer by layer
# (97-142 dB), ends 31 dB from it, while fake-quant is 28.6 dB from fp32; the tiny test ViTs agree at
# 45-140 dB. A lowering bug (a wrong scale, a swapped channel axis, a dropped bias) lands below 15 dB.
MIN_SQNR_VS_REFERENCE_DB = 25.0


def precision_for(plan: QuantPlan, target: str) -> str:
    """The artifact precision name for `plan` on `target`; ConversionError naming the bits it can hold.

    "int8" for an all-8-bit plan on a target whose registry entry `names_int8` (onnx/executorch/tflite);
    "w<weight bits>a8" otherwise (every coreml artifact, and executorch with 4-bit weights), e.g. "w8a8",
    "w4-8a8" (4- and 8-bit weights), "w4-6-8a8".
    """
    if target not in TARGET_INFO:
        raise ConversionError(f"unknown target {target!r}; valid targets: {', '.join(TARGETS)}")
    info = TARGET_INFO[target]
    for kind, held, bits_of in (
        ("weight", info.weight_bits, lambda lq: lq.weight_bits),
        ("activation", info.act_bits, lambda lq: lq.act_bits),
    ):
        bad = [lq for lq in plan.layers.values() if bits_of(lq) is not None and bits_of(lq) not in held]
        if bad:
            bits = sorted({bits_of(lq) for lq in bad})
            raise ConversionError(
                f"{target} holds {held_bits(target)}; the plan has {'/'.join(map(str, bits))}-bit {kind}s in "
                f"{len(bad)} layer(s) (e.g. {bad[0].name!r}): re-plan for {target} or choose another target"
            )
    weight_bits = sorted({lq.weight_bits for lq in plan.layers.values() if lq.weight is not None})
    if not info.names_int8 or weight_bits not in ([], [8]):
        # W8A8 and the like: weight widths held (e.g. "w4-8a8" for a mixed plan), then activation bits.
        return f"w{'-'.join(map(str, weight_bits)) or '16'}a8"
    return "int8"


def convert_quantized(
    unit: DeployUnit,
    target: str,
    plan: QuantPlan,
    out_dir: Path,
    *,
    parity_inputs: Sequence[tuple[torch.Tensor, ...]] | None = None,
    min_sqnr_db: float = MIN_SQNR_VS_REFERENCE_DB,
    **options: Any,
) -> Artifact:
    """Lower `unit` quantized as `plan` says for `target`, check it against its reference, and return it.

    `unit.module` must be the model the plan was calibrated on (after SQ-b, if it ran). Parity runs on
    `parity_inputs`, tuples shaped like the unit's example inputs (default: the example inputs alone), which
    should be held-out real data. As with `convert`, the file appears in `out_dir` only once it loads and
    passes parity. `options` go to the target's lowering, checked before anything is written (e.g.
    `coreml_target`, Core ML's minimum deployment target: see `converters.targets.coreml.quantized`).
    """
    precision = precision_for(plan, target)
    info = target_info(target)
    lowering = info.part("quantized").lowering(plan, **options)
    check_unit(unit)
    reference: dict[str, nn.Module] = {}

    def lower(tmp: Path) -> TargetResult:
        try:
            result, reference["module"] = lowering(unit, plan, tmp)
            _weight_bytes(result["facts"]["quant"], plan, target, tmp)
        except (ConversionError, QuantError) as exc:
            raise ConversionError(str(exc)) from exc
        except OSError as exc:
            raise ConversionError(f"{target}: cannot write {tmp}: {exc.strerror or exc}") from exc
        except Exception as exc:
            raise lowering_error(exc, unit, target) from exc
        return result

    return stage_artifact(
        unit,
        target,
        precision,
        out_dir,
        lower=lower,
        check=lambda tmp, result: _parity(
            unit, plan, target, tmp, parity_inputs, result, reference["module"], min_sqnr_db
        ),
        backends=(*info.backends, "torchao"),
        floor=min_sqnr_db,
    )


def _weight_bytes(quant: dict[str, Any], plan: QuantPlan, target: str, path: Path) -> None:
    """Planned weight bytes (`quant.cost`, what a bytes budget was held to) beside those read back from the
    written file by the target's `facts` part (None where the format is not read: `TargetInfo.reads_weight_bytes`)."""
    from quant.cost import plan_bytes

    info = target_info(target)
    quant["weight_bytes_planned"] = plan_bytes(plan, target)
    quant["weight_bytes_written"] = (
        info.part("facts").written_weight_bytes(path, quant) if info.reads_weight_bytes else None
    )


def _parity(
    unit: DeployUnit,
    plan: QuantPlan,
    target: str,
    path: Path,
    inputs: Sequence[tuple[torch.Tensor, ...]] | None,
    result: TargetResult,
    reference: nn.Module,
    floor: float,
) -> tuple[dict[str, OutputParity] | None, str | None]:
    """SQNR of the artifact against its reference (gated), the plan's fake-quant and fp32, over all `inputs`."""
    quant = result["facts"]["quant"]
    try:
        runner = load_runner(target, path, None)
    except RuntimeUnavailableError as exc:
        quant.update(parity_vs_reference=None, parity_vs_fake_quant=None, parity_vs_fp32=None)
        return None, str(exc)
    except Exception as exc:
        raise ConversionError(f"{target} artifact of unit {unit.name!r} does not load: {exc}") from exc

    batches = [tuple(b) for b in inputs] if inputs is not None else [unit.example_inputs]
    got = [run_artifact(runner, unit, (x.detach().numpy() for x in b)) for b in batches]
    models = {"reference": reference, "fake_quant": apply_plan(unit.module, plan), "fp32": unit.module}
    figures: dict[str, dict[str, OutputParity]] = {}
    for kind, model in models.items():
        model.eval()
        outs = [dataclasses.replace(unit, module=model).run_eager(*b) for b in batches]
        figures[kind] = {}
        for i, name in enumerate(unit.output_names):
            r = np.concatenate([o[i].detach().numpy().reshape(-1) for o in outs])
            g = np.concatenate([np.asarray(o[i]).reshape(-1) for o in got])
            figures[kind][name] = OutputParity(sqnr_db(r, g), max_abs_diff(r, g))
        quant[f"parity_vs_{kind}"] = {k: v.to_dict() for k, v in figures[kind].items()}
    for name, fig in figures["reference"].items():
        if not fig.sqnr_db >= floor:
            raise ConversionError(
                f"unit {unit.name!r} on {target}: output {name!r} is {fig.sqnr_db:.1f} dB from its reference "
                f"({quant['reference']}; < {floor:.0f} dB; {figures['fp32'][name].sqnr_db:.1f} dB from fp32)"
            )
    return figures["reference"], None
