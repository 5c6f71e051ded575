"""The one error type `quant/` raises for things a user can fix.

Callers (the CLI, recipes) print `str(err)` as a single line, so every message names the layer, the
number or the option involved and what to change; stack traces are for bugs, not for bad inputs.
"""

from __future__ import annotations


class QuantError(Exception):
    """A user-facing, one-line quantization failure (bad calibration data, unsupported layer, budget)."""
