"""The tokens pass: `TokensConfig` (method, FLOPs reduction or keep ratio, start block) and `apply`, which
installs training-free token compression (`edgevit.compress.tokens`) in every deploy unit that has transformer
blocks, in place, and records per unit the FLOPs before/after, the tokens each block keeps and the fidelity
(SQNR against the uncompressed unit on its held-out inputs: real images, or frames the tracker recorded).

The compression itself needs no data (its matrices are built from each input's own tokens); the data is only
for measuring what it costs.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from converters.unit import DeployUnit
from edgevit.errors import EdgevitError
from edgevit.pipeline.passes.base import Names, Pass, PassData, PassRecord

FLAGS = {"method": "--tokens", "flops": "--token-flops", "keep": "--token-keep", "start": "--token-start"}


@dataclass(frozen=True)
class TokensConfig:
    """Compress tokens with `method` (transform, topk, tome) to remove the fraction `flops` of each unit's FLOPs,
    or keeping the fraction `keep` of the tokens in each compressing block, from block `start` on."""

    kind: ClassVar[str] = "tokens"
    method: str = "transform"
    flops: float | None = None
    keep: float | None = None
    start: int = 0


def _name(names: Names, key: str) -> str:
    """A setting as the user wrote it: its `--token-*` flag, or its key in a recipe file."""
    return FLAGS[key] if names.prefix is None else names(key)


def from_table(table: Mapping[str, Any], names: Names) -> TokensConfig:
    """A recipe file's `[[passes]]` table (`kind = "tokens"` already read)."""
    valid = [f.name for f in dataclasses.fields(TokensConfig)]
    unknown = [key for key in table if key not in valid]
    if unknown:
        raise EdgevitError(f"unknown key {names(unknown[0])}; valid keys of a tokens pass: kind, {', '.join(valid)}")
    kinds = {"method": str, "flops": (int, float), "keep": (int, float), "start": int}
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, kinds[key]):
            raise EdgevitError(f"{names(key)} = {value!r} has the wrong type; see the README's Token compression")
    values = {k: float(v) if k in ("flops", "keep") else v for k, v in table.items()}
    return TokensConfig(**values)


def check(config: TokensConfig, names: Names) -> None:
    """Refuse impossible settings before any slow work starts."""
    from edgevit.compress.tokens import METHODS
    from edgevit.compress.tokens.compress import MIN_KEEP

    n = names
    if config.method not in METHODS:
        raise EdgevitError(f"unknown token method {config.method!r}{n.where('method')}; valid: {', '.join(METHODS)}")
    if (config.flops is None) == (config.keep is None):
        raise EdgevitError(
            f"token compression needs exactly one of {_name(n, 'flops')} (fraction of FLOPs to remove, e.g. 0.4) "
            f"or {_name(n, 'keep')} (fraction of tokens each block keeps, e.g. 0.8)"
        )
    if config.flops is not None and not (0 < config.flops < 1 and math.isfinite(config.flops)):
        raise EdgevitError(f"{_name(n, 'flops')} must be a fraction between 0 and 1 (e.g. 0.4), got {config.flops}")
    if config.keep is not None and not MIN_KEEP <= config.keep <= 1:
        raise EdgevitError(
            f"{_name(n, 'keep')} must be between {MIN_KEEP} (ToMe merges at most half a block's tokens) and 1, "
            f"got {config.keep}"
        )
    if config.start < 0:
        raise EdgevitError(f"{_name(n, 'start')} must be a block index, 0 or more, got {config.start}")


def apply(units: Sequence[DeployUnit], config: TokensConfig, data: PassData) -> tuple[list[DeployUnit], PassRecord]:
    """Compress every unit that has transformer blocks (in place); the others pass through unchanged."""
    from edgevit.compress.tokens import TokenBudgetError, TokenSettings, compress_tokens

    settings = TokenSettings(config.method, config.flops, config.keep, config.start)
    per_unit: dict[str, Any] = {}
    for unit in units:
        reference = copy.deepcopy(unit.module).eval()
        try:
            report = compress_tokens(unit.module, settings, unit.example_inputs)
        except TokenBudgetError as exc:
            raise EdgevitError(
                f"unit {unit.name!r}: {config.flops:.0%} of the FLOPs cannot be removed ({exc}); lower "
                f"{_name(Names(), 'flops')} or {_name(Names(), 'start')}"
            ) from None
        except ValueError:  # nothing to compress in this unit (e.g. a mask decoder)
            continue
        if report.flops_after >= report.flops_before:
            raise EdgevitError(
                f"unit {unit.name!r}: compressing its tokens costs more FLOPs than it saves ({report.flops_after:,} "
                f"vs {report.flops_before:,}: the token matrices outweigh what the fewer tokens save, as in "
                "EfficientTAM's 512 image encoder, whose window blocks keep every token); leave out --tokens here"
            )
        held_out = data.batches[unit.name].held_out if unit.name in data.batches else [unit.example_inputs]
        per_unit[unit.name] = {
            "flops_before": report.flops_before,
            "flops_after": report.flops_after,
            "flops_reduction": round(report.reduction, 4),
            "keep": round(report.keep, 4),
            "tokens_per_block": report.tokens,
            "sqnr_db": _fidelity(reference, unit, held_out),
            "fidelity_inputs": len(held_out),
        }
    if not per_unit:
        raise EdgevitError(
            "no deploy unit has transformer blocks to compress tokens in; use a ViT-family model, dinov2_s_focus "
            "or efficienttam"
        )
    info = {"method": config.method, "flops": config.flops, "keep": config.keep, "start": config.start}
    return list(units), PassRecord(TokensConfig.kind, {**info, "units": per_unit, "calibration": data.calibration})


def _fidelity(reference: Any, unit: DeployUnit, inputs: Sequence[tuple]) -> dict[str, float | None]:
    """SQNR (dB) of each output of the compressed unit against the uncompressed one, over all `inputs`."""
    import torch

    from quant.metrics import sqnr

    ref_unit = dataclasses.replace(unit, module=reference)
    refs, outs = zip(*((ref_unit.run_eager(*x), unit.run_eager(*x)) for x in inputs), strict=True)
    found = {}
    for i, name in enumerate(unit.output_names):
        value = sqnr(torch.cat([r[i].flatten() for r in refs]), torch.cat([o[i].flatten() for o in outs]))
        found[name] = round(value, 2) if math.isfinite(value) else None
    return found


TOKENS = Pass(
    kind=TokensConfig.kind,
    config=TokensConfig,
    apply=apply,
    from_table=from_table,
    check=check,
    needs_data=True,
)
