"""What every pass shares: the data it may need, the record it returns, and how its errors name a setting.

A pass is a frozen config dataclass plus a function `apply(units, config, data) -> (units, record)`, the shape of
torchao's `quantize_(model, config)`: the function takes the deploy units (and calibration data where it needs
it) and returns them transformed, with a record for the manifest. The runner knows nothing of any one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from converters.unit import DeployUnit
from edgevit.unit_data import UnitBatches
from quant.plan import QuantPlan

FLAGS = {"targets": "--target", "calibration": "--calib"}  # keys whose flag is not `--key-with-dashes`
TOP_LEVEL = ("targets", "precision", "calibration")  # recipe keys outside any pass


@dataclass(frozen=True)
class Names:
    """How an error names a setting: the command-line flag (`--bits`), or the key of a recipe file
    (`passes[0].bits`) when `prefix` is given, so a message points at what the user wrote."""

    prefix: str | None = None

    def __call__(self, key: str) -> str:
        if self.prefix is None:
            return FLAGS.get(key, "--" + key.replace("_", "-"))
        return key if key in TOP_LEVEL else f"{self.prefix}{key}"

    def where(self, key: str) -> str:
        """` (passes[0].method)` for a recipe file; nothing on the command line, where the value says it."""
        return "" if self.prefix is None else f" ({self(key)})"


@dataclass
class PassData:
    """What a pass may use besides the units: the targets it lowers for, each unit's calibration and held-out
    inputs (loaded once, only when a pass needs them), where they came from, and where to report."""

    targets: tuple[str, ...]
    batches: Mapping[str, UnitBatches] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    explain: Callable[[Any], None] | None = None
    bars: bool = False


@dataclass
class PassRecord:
    """What a pass did, for the manifest: `info` (plain JSON) and, from a quant pass, the plan each unit is
    lowered with (written beside the manifest as `quant/<unit>.plan.json`)."""

    kind: str
    info: dict[str, Any]
    plans: dict[str, QuantPlan] = field(default_factory=dict)


class PassConfig(Protocol):
    """A pass's settings: a frozen dataclass whose `kind` is its `kind = "..."` in a recipe file."""

    kind: str


Apply = Callable[[Sequence[DeployUnit], Any, PassData], tuple[list[DeployUnit], PassRecord]]


@dataclass(frozen=True)
class Pass:
    """One registered pass: its config type, the function that runs it, and what the runner must know of it.

    `from_table` builds the config from a recipe file's table (refusing unknown keys); `check` refuses bad
    values before slow work starts; `targets` keeps the targets that can hold the pass's output and says why
    the others are skipped (or refuses when none can); `needs_data` loads calibration data.
    """

    kind: str
    config: type
    apply: Apply
    from_table: Callable[[Mapping[str, Any], Names], Any]
    check: Callable[[Any, Names], None]
    targets: Callable[[Any, tuple[str, ...], Names], tuple[tuple[str, ...], dict[str, str]]] | None = None
    needs_data: bool = False
