"""A `Recipe`: everything that makes a bundle (model, weights, config overrides, passes, targets, precision,
calibration, seed), from command-line flags or a TOML file, and written back into every bundle as `recipe.toml`
so `edgevit convert --recipe bundle/recipe.toml` rebuilds it.

    model = "vit"
    variant = "ti16_224"
    targets = ["onnx", "tflite"]
    calibration = "builtin"

    [overrides]
    depth = 2

    [[passes]]
    kind = "quant"
    method = "mptq"
    bits = "4"

Relative paths in a file are relative to the file's folder. Every mistake in a file is one `EdgevitError` line
naming the file, the key and the fix.
"""

from __future__ import annotations

import ast
import dataclasses
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevit.errors import EdgevitError
from edgevit.pipeline.passes import Names, config_from_table, pass_for

PRECISIONS = ("fp32", "fp16")
KEYS = ("model", "variant", "checkpoint", "targets", "precision", "calibration", "seed", "overrides", "passes")
_TYPES = {"model": str, "variant": str, "checkpoint": str, "precision": str, "calibration": str, "seed": int}


@dataclass(frozen=True)
class Recipe:
    """What to build: `model` (and `variant`), a `checkpoint` to load strictly (else random weights drawn with
    `seed`), config `overrides` (`--set`), `passes` applied in order, `targets` ("all" or names), float
    `precision` (none with a quant pass: its plan sets the bits) and the `calibration` source passes read."""

    model: str
    variant: str | None = None
    checkpoint: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    passes: tuple[Any, ...] = ()
    targets: tuple[str, ...] = ("all",)
    precision: str | None = None
    calibration: str = "builtin"
    seed: int = 0
    source: Path | None = field(default=None, compare=False, repr=False)  # the file it was read from, if any

    def names(self, index: int | None = None) -> Names:
        """How errors name this recipe's settings: flags, or the file's keys (a pass's under `passes[i].`)."""
        if self.source is None:
            return Names()
        return Names(f"passes[{index}]." if index is not None else "")

    def check(self) -> None:
        """Refuse bad values (each pass's included) before any slow work starts."""
        if self.precision is not None and self.precision not in PRECISIONS:
            raise EdgevitError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        quant = [c for c in self.passes if c.kind == "quant"]
        if len(quant) > 1:
            raise EdgevitError("a recipe quantizes once: keep one quant pass")
        if quant and self.passes[-1].kind != "quant":
            after = self.passes[-1].kind
            raise EdgevitError(
                f"the quant pass plans the bits of the units as they are, so a {after} pass after it would undo the "
                "plan; put the quant pass last"
            )
        if quant and self.precision is not None:
            n = self.names()
            raise EdgevitError(
                f"{n('precision')} sets float artifacts; with {'--quant' if self.source is None else 'a quant pass'} "
                "the plan sets the bits (drop one)"
            )
        for i, config in enumerate(self.passes):
            pass_for(config).check(config, self.names(i))

    @classmethod
    def from_toml(cls, path: Path) -> Recipe:
        """Read and check a recipe file; every problem is one line naming the file and the key."""
        path = Path(path)
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise EdgevitError(f"recipe {path} does not exist; write one (see README, Recipes)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise EdgevitError(f"cannot read recipe {path}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise EdgevitError(f"{path} is not valid TOML ({exc}); fix the syntax") from None
        try:
            return _from_table(table, path)
        except EdgevitError as exc:
            raise EdgevitError(f"{path}: {exc}") from None

    def to_toml(self) -> str:
        """The recipe as a TOML file (`tomli_w`); None values are left out, passes keep their order."""
        import tomli_w

        top = {
            "model": self.model,
            "variant": self.variant,
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "targets": list(self.targets),
            "precision": self.precision,
            "calibration": self.calibration,
            "seed": self.seed,
            "overrides": {k: _toml_value(v) for k, v in self.overrides.items()},
        }
        passes = [
            {"kind": c.kind, **{k: v for k, v in dataclasses.asdict(c).items() if v is not None}} for c in self.passes
        ]
        doc = {k: v for k, v in top.items() if v is not None}
        if passes:
            doc["passes"] = passes
        return tomli_w.dumps(doc)

    def resolved(self, targets: Sequence[str]) -> Recipe:
        """This recipe as a bundle records it: absolute paths and the targets named, so it rebuilds from anywhere."""
        calibration = self.calibration if self.calibration == "builtin" else str(Path(self.calibration).resolve())
        checkpoint = None if self.checkpoint is None else Path(self.checkpoint).resolve()
        return dataclasses.replace(self, checkpoint=checkpoint, calibration=calibration, targets=tuple(targets))


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """`--set key=value` pairs as config overrides; values are Python literals, else strings."""
    found = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise EdgevitError(f"--set {pair!r} is not KEY=VALUE (e.g. --set depth=2)")
        try:
            found[key.strip()] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            found[key.strip()] = raw
    return found


def _from_table(table: dict[str, Any], path: Path) -> Recipe:
    unknown = [key for key in table if key not in KEYS]
    if unknown:
        raise EdgevitError(f"unknown key {unknown[0]!r}; valid keys: {', '.join(KEYS)}")
    if "model" not in table:
        raise EdgevitError('no model; add e.g. model = "vit" (see `edgevit models`)')
    for key, kind in _TYPES.items():
        if key in table and (isinstance(table[key], bool) or not isinstance(table[key], kind)):
            raise EdgevitError(f"{key} = {table[key]!r} must be {'an integer' if kind is int else 'a string'}")
    targets = table.get("targets", ["all"])
    if isinstance(targets, str):
        targets = [targets]
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise EdgevitError('targets must be a list of target names, e.g. targets = ["onnx", "tflite"], or "all"')
    overrides = table.get("overrides", {})
    if not isinstance(overrides, dict):
        raise EdgevitError("overrides must be a table of config fields, e.g. [overrides] depth = 2")
    passes = table.get("passes", [])
    if not isinstance(passes, list) or not all(isinstance(p, dict) for p in passes):
        raise EdgevitError('passes must be an array of tables, e.g. [[passes]] kind = "quant"')
    recipe = Recipe(
        model=table["model"],
        variant=table.get("variant"),
        checkpoint=_relative(path, table.get("checkpoint")),
        overrides={k: _from_toml_value(v) for k, v in overrides.items()},
        passes=tuple(config_from_table(p, Names(f"passes[{i}].")) for i, p in enumerate(passes)),
        targets=tuple(targets),
        precision=table.get("precision"),
        calibration=str(_relative(path, table.get("calibration", "builtin"))),
        seed=table.get("seed", 0),
        source=path,
    )
    recipe.check()
    return recipe


def _relative(path: Path, value: str | None) -> Path | str | None:
    if value is None or value == "builtin":
        return value
    return Path(value) if Path(value).is_absolute() else path.parent / value


def _toml_value(value: Any) -> Any:
    return [_toml_value(v) for v in value] if isinstance(value, tuple | list) else value


def _from_toml_value(value: Any) -> Any:
    """TOML arrays come back as lists; config fields written from `--set (1, 2)` were tuples."""
    return tuple(_from_toml_value(v) for v in value) if isinstance(value, list) else value
