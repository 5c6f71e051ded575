"""Passes over a model's deploy units, each a config dataclass plus a function (see `base`), and the registry
that maps a config type, or a recipe file's `kind = "..."`, to its handler.

Adding a pass (pruning, token compression, splitting) is one module and one `register` line: the runner, the
recipe file and the commands find it here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgevit.errors import EdgevitError
from edgevit.pipeline.passes.base import Names, Pass, PassConfig, PassData, PassRecord
from edgevit.pipeline.passes.extract import MATFORMER
from edgevit.pipeline.passes.prune import PRUNE, PruneConfig
from edgevit.pipeline.passes.quant import QUANT, QuantConfig
from edgevit.pipeline.passes.tokens import TOKENS, TokensConfig

_BY_KIND: dict[str, Pass] = {}


def register(handler: Pass) -> Pass:
    """Make a pass known by its config type and its `kind`."""
    if handler.kind in _BY_KIND:
        raise ValueError(f"a pass of kind {handler.kind!r} is already registered")
    _BY_KIND[handler.kind] = handler
    return handler


def kinds() -> tuple[str, ...]:
    return tuple(_BY_KIND)


def pass_for(config: Any) -> Pass:
    """The handler of a config instance (by its type)."""
    for handler in _BY_KIND.values():
        if type(config) is handler.config:
            return handler
    raise TypeError(f"{type(config).__name__} is not a registered pass config; registered: {', '.join(kinds())}")


def config_from_table(table: Mapping[str, Any], names: Names) -> Any:
    """A pass config from a recipe file's `[[passes]]` table, chosen by its `kind`."""
    kind = table.get("kind")
    if kind not in _BY_KIND:
        raise EdgevitError(f"{names('kind')} = {kind!r} is not a pass; valid kinds: {', '.join(kinds())}")
    config = _BY_KIND[kind].from_table({k: v for k, v in table.items() if k != "kind"}, names)
    _BY_KIND[kind].check(config, names)
    return config


def apply(units: list, config: Any, data: PassData) -> tuple[list, PassRecord]:
    """Run one pass: `quantize_(model, config)`'s shape, over deploy units."""
    return pass_for(config).apply(units, config, data)


register(QUANT)
register(MATFORMER)
register(PRUNE)
register(TOKENS)

__all__ = [
    "Names",
    "Pass",
    "PassConfig",
    "PassData",
    "PassRecord",
    "PruneConfig",
    "QuantConfig",
    "TokensConfig",
    "apply",
    "config_from_table",
    "kinds",
    "pass_for",
    "register",
]
