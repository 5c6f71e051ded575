"""`edgevit quantize` (and `edgevit convert --quant`): calibrate on real data, plan the bits, and write low-bit
artifacts in a bundle — flags → a recipe with one quant pass (`edgevit.pipeline.passes.quant`) → `pipeline.run`.

Every deploy unit is calibrated on what it sees in use (`edgevit.unit_data`): EfficientTAM's memory and decoder
units on inputs recorded while the model tracks real frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edgevit.pipeline import QuantConfig, Recipe, parse_overrides
from edgevit.pipeline.passes.quant import QHYVIT_ITERS


def quantize(
    model_name: str,
    variant: str | None,
    checkpoint: Path | None,
    overrides: Sequence[str],
    method: str,
    bits: str,
    budget_mb: float | None,
    calib: str,
    target: str,
    explain: bool,
    out: Path,
    force: bool,
    as_json: bool,
    recon_iters: int = QHYVIT_ITERS,
    budget_ms: float | None = None,
    device: str | None = None,
) -> None:
    from edgevit.console.run import build

    recipe = Recipe(
        model=model_name,
        variant=variant,
        checkpoint=checkpoint,
        overrides=parse_overrides(overrides),
        passes=(QuantConfig(method, bits, budget_mb, recon_iters, budget_ms, device),),
        targets=tuple(target.split(",")),
        calibration=calib,
    )
    build(recipe, out, force, as_json, explain)
