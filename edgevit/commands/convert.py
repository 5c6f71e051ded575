"""`edgevit convert`: a registered model's deploy units → a verified bundle for one or all targets, from flags or
from a recipe file (`--recipe`, e.g. the `recipe.toml` a bundle records)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgevit.errors import EdgevitError
from edgevit.pipeline import QuantConfig, Recipe, parse_overrides
from edgevit.pipeline.passes import PruneConfig, TokensConfig

RECIPE_COMPANIONS = ("out", "force", "as_json")  # the only flags that may come with --recipe


@dataclass(frozen=True)
class QuantOptions:
    """`--quant` and its companions: `edgevit convert --quant M` is `edgevit quantize --method M`."""

    method: str
    bits: str
    budget_mb: float | None
    calib: str
    budget_ms: float | None = None
    device: str | None = None

    @classmethod
    def from_flags(
        cls,
        method: str | None,
        bits: str | None,
        budget_mb: float | None,
        calib: str | None,
        precision: str | None,
        budget_ms: float | None = None,
        device: str | None = None,
        explain: bool = False,
    ) -> QuantOptions | None:
        """None for a float conversion; refuses quantization flags without `--quant` and `--precision` with it."""
        if method is None:
            flags = (("--bits", bits), ("--budget-mb", budget_mb), ("--calib", calib), ("--budget-ms", budget_ms))
            flags += (("--device", device), ("--explain", explain or None))
            given = [flag for flag, value in flags if value is not None]
            if given:
                raise EdgevitError(f"{', '.join(given)} only apply with --quant ptq|qhyvit|mptq")
            return None
        if precision is not None:
            raise EdgevitError("--precision sets float artifacts; with --quant the plan sets the bits (drop one)")
        return cls(method, bits or "8", budget_mb, calib or "builtin", budget_ms, device)

    def config(self) -> QuantConfig:
        return QuantConfig(self.method, self.bits, self.budget_mb, budget_ms=self.budget_ms, device=self.device)


def recipe_from_flags(
    model_name: str,
    variant: str | None,
    checkpoint: Path | None,
    overrides: Sequence[str],
    target: str,
    precision: str | None,
    quant: QuantOptions | None,
    prune: PruneConfig | None = None,
    calib: str | None = None,
    tokens: TokensConfig | None = None,
) -> Recipe:
    """The recipe the flags describe: a float conversion, or a prune pass and/or one quant pass (pruned first)."""
    passes = () if quant is None else (quant.config(),)
    passes = passes if tokens is None else (tokens, *passes)
    passes = passes if prune is None else (prune, *passes)
    return Recipe(
        model=model_name,
        variant=variant,
        checkpoint=checkpoint,
        overrides=parse_overrides(overrides),
        passes=passes,
        targets=tuple(target.split(",")),
        precision=precision,
        calibration=quant.calib if quant is not None else calib or "builtin",
    )


def prune_from_flags(
    budget: float | None, score: str | None, by: str | None, recover_steps: int | None
) -> PruneConfig | None:
    """`--prune FRACTION` and its companions as a prune pass; None without `--prune` (companions refused)."""
    if budget is None:
        flags = (("--prune-score", score), ("--prune-by", by), ("--recover-steps", recover_steps))
        given = [flag for flag, value in flags if value is not None]
        if given:
            raise EdgevitError(f"{', '.join(given)} only apply with --prune FRACTION (e.g. --prune 0.3)")
        return None
    return PruneConfig(budget, score or PruneConfig.score, by or PruneConfig.by, recover_steps or 0)


def tokens_from_flags(
    method: str | None, flops: float | None, keep: float | None, start: int | None
) -> TokensConfig | None:
    """`--tokens METHOD` and its companions as a tokens pass; None without `--tokens` (companions refused)."""
    if method is None:
        flags = (("--token-flops", flops), ("--token-keep", keep), ("--token-start", start))
        given = [flag for flag, value in flags if value is not None]
        if given:
            raise EdgevitError(f"{', '.join(given)} only apply with --tokens transform|topk|tome")
        return None
    return TokensConfig(method, flops, keep, start or 0)


def refuse_flags_with_recipe(given: Sequence[str]) -> None:
    """`--recipe` says everything that makes the bundle: another flag would silently lose to it, or win."""
    extra = [name for name in given if name not in RECIPE_COMPANIONS]
    if extra:
        flags = ", ".join("--" + name.rstrip("_").replace("_", "-") for name in extra)
        raise EdgevitError(f"{flags} cannot be given with --recipe (only --out, --force, --json); edit the recipe")


def convert(recipe: Recipe, out: Path, force: bool, as_json: bool, explain: bool = False) -> None:
    """Build the recipe into `out` and print the bundle (its manifest with `as_json`; the plan with `explain`)."""
    from edgevit.console.run import build

    build(recipe, out, force, as_json, explain)
