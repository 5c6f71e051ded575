"""Parity of an artifact against eager PyTorch: SQNR and max abs difference per output, with a floor.

SQNR (10·log10 of signal power over error power) is the gate because it is scale-free: one floor works for
logits near ±0.2 and for features in the hundreds, where an absolute tolerance would be either vacuous or
impossible. The max abs difference is reported beside it for people who think in units of the output.

The floors (`MIN_SQNR_DB`), and why:
- fp32, 60 dB (error ≈ 0.1 % of the signal in amplitude). A faithful fp32 lowering differs from eager only
  in summation order and fusions; on ViTs that measures 120+ dB. A real lowering bug (wrong layout, dropped
  bias, a mis-translated op) lands below 20 dB, so 60 dB separates the two with room on both sides.
- fp16, 30 dB (≈ 3 %). One fp16 rounding is about -66 dB; through a dozen attention blocks it accumulates to
  roughly 40-55 dB (measured on the test ViTs); weight-only fp16 stays near 70 dB. 30 dB still fails every
  kind of bug above while tolerating honest half-precision compute.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from converters.artifact import OutputParity
from converters.errors import ConversionError
from converters.runtime import Runner
from converters.unit import DeployUnit

MIN_SQNR_DB: dict[str, float] = {"fp32": 60.0, "fp16": 30.0}


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantisation-noise ratio of `test` against `ref` in dB, computed in float64.

    inf when the two are equal; nan when `test` holds NaN, so any comparison against a floor fails.
    """
    ref64 = np.asarray(ref, dtype=np.float64)
    noise = float(np.sum((ref64 - np.asarray(test, dtype=np.float64)) ** 2))
    signal = float(np.sum(ref64**2))
    if math.isnan(noise):
        return math.nan
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def max_abs_diff(ref: np.ndarray, test: np.ndarray) -> float:
    """Largest elementwise |ref - test| in float64 (0.0 for empty tensors)."""
    diff = np.abs(np.asarray(ref, dtype=np.float64) - np.asarray(test, dtype=np.float64))
    return float(diff.max()) if diff.size else 0.0


def run_artifact(runner: Runner, unit: DeployUnit, arrays: Iterable[np.ndarray]) -> list[np.ndarray]:
    """The runner's outputs, or one line naming the unit and target when the written file fails in its runtime
    (a program that loads but cannot execute, e.g. XNNPACK rejecting a shape): never a runtime's traceback."""
    try:
        return runner.run(*arrays)
    except Exception as exc:
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)[:200]
        raise ConversionError(
            f"unit {unit.name!r} on {runner.target}: the written artifact fails in its runtime ({reason}); "
            "nothing was kept — try another --target or precision"
        ) from exc


def check_parity(
    unit: DeployUnit,
    runner: Runner,
    inputs: tuple[Any, ...] | None = None,
    min_sqnr_db: float = MIN_SQNR_DB["fp32"],
) -> dict[str, OutputParity]:
    """Run the unit eagerly and through `runner` on the same inputs; raise ConversionError naming the unit,
    target, output and figure if any output's SQNR is below `min_sqnr_db` or its shape differs.

    `inputs` are tensors in the unit's input order; None uses the unit's example inputs, which should then be
    representative (random or real data, not zeros: an all-zero input makes many bugs invisible).
    """
    inputs = unit.example_inputs if inputs is None else tuple(inputs)
    ref = unit.run_eager(*inputs)
    got = run_artifact(runner, unit, (x.detach().cpu().numpy() for x in inputs))
    where = f"unit {unit.name!r} on {runner.target}"
    if len(got) != len(ref):
        raise ConversionError(f"{where}: artifact returns {len(got)} outputs, eager returns {len(ref)}")

    figures: dict[str, OutputParity] = {}
    for name, r, g in zip(unit.output_names, ref, got, strict=True):
        r = r.detach().cpu().numpy()
        if tuple(r.shape) != tuple(g.shape):
            raise ConversionError(f"{where}: output {name!r} has shape {tuple(g.shape)}, eager {tuple(r.shape)}")
        figures[name] = OutputParity(sqnr_db(r, g), max_abs_diff(r, g))
        s = figures[name].sqnr_db
        if not s >= min_sqnr_db:  # written so that nan fails too
            raise ConversionError(
                f"{where}: output {name!r} SQNR {s:.1f} dB < {min_sqnr_db:.0f} dB "
                f"(max abs diff {figures[name].max_abs_diff:.3g})"
            )
    return figures
