"""A quantized bundle: the same manifest as `edgevit convert` writes, plus a `quant` section and the plans.

Apps read a quantized bundle exactly as an fp32 one (artifacts, I/O names, parity); the `quant` section
says how the numbers were made (method, bits, calibration data, per-unit plan summary) and where each
unit's `QuantPlan` JSON lies, so a run can be audited or replayed on a new checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from converters.unit import DeployUnit
from edgevit.bundle import manifest_header, write_manifest
from edgevit.io import atomic_dir
from quant.plan import QuantPlan


@dataclass
class QuantizedUnit:
    """One deploy unit ready to lower: the (possibly SQ-b-smoothed) unit, its plan, and held-out inputs for
    the artifacts' parity checks."""

    unit: DeployUnit
    plan: QuantPlan
    eval_inputs: list[tuple[torch.Tensor, ...]]


def write_quant_bundle(
    model: nn.Module,
    units: Sequence[QuantizedUnit],
    targets: Sequence[str],
    out: Path,
    quant_info: Mapping[str, Any],
    force: bool = False,
    on_artifact: Callable[[str, str], None] | None = None,
) -> dict[str, Any]:
    """Lower every unit for every target into `out` (atomically) and return the manifest."""
    from converters.quantized import convert_quantized

    artifacts = []
    plans = {}
    with atomic_dir(out, force) as tmp:
        (tmp / "quant").mkdir()
        for q in units:
            plan_path = Path("quant") / f"{q.unit.name}.plan.json"
            (tmp / plan_path).write_text(q.plan.to_json() + "\n")
            plans[q.unit.name] = {
                "plan": str(plan_path),
                "summary": q.plan.summary(),
                "metadata": json_safe(q.plan.metadata),
            }
            for target in targets:
                if on_artifact is not None:
                    on_artifact(q.unit.name, target)
                art = convert_quantized(q.unit, target, q.plan, tmp / target, parity_inputs=q.eval_inputs)
                entry = art.to_dict()
                entry["path"] = str(Path(target) / Path(art.path).name)
                artifacts.append(entry)
        manifest = {
            **manifest_header(model, [q.unit for q in units]),
            "quant": json_safe({**quant_info, "units": plans}),
            "artifacts": artifacts,
        }
        write_manifest(tmp, manifest)
    return manifest


def json_safe(value: Any) -> Any:
    """Non-finite floats as the strings "inf"/"-inf"/"nan", as `Artifact.to_dict` writes them: strict JSON
    parsers in apps (Swift's JSONDecoder, Kotlin's) reject bare Infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
