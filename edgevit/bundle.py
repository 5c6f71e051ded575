"""The model side of a bundle: what a model says about itself in the manifest, and the loops that lower its deploy
units for each target through `converters.bundle.write_bundle` (float) or with their quantization plans.

Everything else about bundles (the manifest's shape, the writer, the validating reader, the output lock) lives in
`converters.bundle`, which apps and the benchmark harness read without importing model code.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import converters
from converters import bundle
from converters.bundle import Header, ModelInfo, PassEntry, QuantSection, QuantUnit, UnitInfo, Weights, safe_text
from converters.unit import DeployUnit
from quant.plan import QuantPlan


def weights_of(model: nn.Module, checkpoint: Path | None = None) -> Weights:
    """The sha256 of the checkpoint the model was loaded from (the caller, who loaded it, says which), else what a
    model that ships its weights declares (e.g. an import), else "random"."""
    if checkpoint is not None:
        from edgevit.models.checkpoint import sha256_of

        return Weights("checkpoint", sha256_of(checkpoint))
    return Weights(getattr(model, "weights_source", None) or "random", None)


def weights_origin(model: nn.Module, checkpoint: Path | None = None) -> str:
    """ "checkpoint", "random", or what a model that ships its weights says about them."""
    return "checkpoint" if checkpoint is not None else weights_of(model).source


def header(
    model: nn.Module,
    units: Sequence[DeployUnit],
    checkpoint: Path | None = None,
    passes: Sequence[PassEntry] = (),
) -> Header:
    """What the manifest says about the model: its spec, config (if a dataclass, as built: a pass that changed the
    units says how in `passes`), weights, deploy units and the passes applied to them."""
    cfg = getattr(model, "cfg", None)
    config = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else None
    info = ModelInfo.from_dict({**model.spec.to_dict(), "config": config})
    return Header(info, weights_of(model, checkpoint), tuple(UnitInfo.from_unit(u) for u in units), tuple(passes))


def write_bundle(
    model: nn.Module,
    targets: Sequence[str],
    precision: str | None,
    out: Path,
    force: bool = False,
    on_artifact: Callable[[str, str], None] | None = None,
    log: Path | None = None,
    *,
    files: Mapping[str, str] | None = None,
    units: Sequence[DeployUnit] | None = None,
    checkpoint: Path | None = None,
    passes: Sequence[PassEntry] = (),
) -> dict[str, Any]:
    """Convert every deploy unit of `model` (or `units`, as passes left them) for every target into `out`;
    returns the manifest.

    `files` (path in the bundle → text, e.g. `recipe.toml`) are written in; `log` (the backends' output) is
    copied in as `convert.log` before the bundle is renamed into place; `checkpoint` is the file the model's
    weights were loaded from (its sha256 goes into the manifest); `passes` what was done to the units.
    """
    units = model.deploy_units() if units is None else list(units)

    def lower(folder: Path):
        for target in targets:
            for unit in units:
                if on_artifact is not None:
                    on_artifact(unit.name, target)
                yield converters.convert(unit, target, precision, folder / target)

    head = header(model, units, checkpoint, passes)
    return bundle.write_bundle(out, head, lower, files=files, log=log, force=force)


@dataclasses.dataclass
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
    *,
    files: Mapping[str, str] | None = None,
    log: Path | None = None,
    checkpoint: Path | None = None,
    passes: Sequence[PassEntry] = (),
) -> dict[str, Any]:
    """Lower every planned unit for every target into `out` and return the manifest: a float bundle's, plus a
    `quant` section (`quant_info`: method, bits, budget, calibration, skipped targets) and each unit's plan file,
    so a run can be audited or replayed on a new checkpoint; `files`, `log`, `checkpoint` and `passes` as in
    `write_bundle`."""
    from converters.quantized import convert_quantized

    plans = {q.unit.name: f"quant/{q.unit.name}.plan.json" for q in units}
    section = QuantSection(
        **quant_info,
        units={q.unit.name: QuantUnit(plans[q.unit.name], q.plan.summary(), dict(q.plan.metadata)) for q in units},
    )

    def lower(folder: Path):
        for q in units:
            for target in targets:
                if on_artifact is not None:
                    on_artifact(q.unit.name, target)
                yield convert_quantized(q.unit, target, q.plan, folder / target, parity_inputs=q.eval_inputs)

    files = {**(files or {}), **{plans[q.unit.name]: q.plan.to_json() + "\n" for q in units}}
    return bundle.write_bundle(
        out,
        header(model, [q.unit for q in units], checkpoint, passes),
        lower,
        quant=section,
        files=files,
        log=log,
        force=force,
    )


def warn_unchecked(artifacts: Sequence[dict[str, Any]]) -> None:
    """One stderr line naming the artifacts about to run that were never parity-checked (Core ML off macOS):
    nothing vouches that they compute what the model does."""
    unchecked = [f"{safe_text(a['unit'])}/{a['target']}" for a in artifacts if a["parity"] is None]
    if unchecked:
        print(
            f"warning: running artifacts never parity-checked against PyTorch: {', '.join(unchecked)}",
            file=sys.stderr,
        )
