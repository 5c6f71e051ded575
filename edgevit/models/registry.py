"""A registry of named model families and their variants, in the style of timm's `create_model`.

A family registers a dict of variant configs (dataclasses) and one builder; `create("efficienttam_s")`,
`create("efficienttam", variant="s")` and `create("efficienttam_s", checkpoint=PATH)` all resolve here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from edgevit.errors import EdgevitError


@dataclass(frozen=True)
class Family:
    name: str
    variants: Mapping[str, Any]  # variant name -> config dataclass instance
    default_variant: str
    build: Callable[[Any, str], nn.Module]  # (config, variant) -> model with .spec and .deploy_units()
    description: str = ""


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    if family.default_variant not in family.variants:
        raise ValueError(f"default variant {family.default_variant!r} not among {list(family.variants)}")
    _FAMILIES[family.name] = family
    return family


def families() -> dict[str, Family]:
    return dict(_FAMILIES)


def full_name(family: Family, variant: str) -> str:
    """The one name of a family's variant: `family_variant`, or the variant alone when it starts with the
    family's name (`mobilevit_xxs`, `efficientformer_l1`: timm's names, not `mobilevit_mobilevit_xxs`)."""
    return variant if variant.startswith(family.name) else f"{family.name}_{variant}"


def model_names() -> list[str]:
    """Every accepted name: each family, and each of its variants' full names."""
    names = []
    for fam in _FAMILIES.values():
        names.append(fam.name)
        names.extend(full_name(fam, v) for v in fam.variants)
    return names


def resolve(name: str, variant: str | None = None) -> tuple[Family, str]:
    """Split a user's model name into (family, variant), with an error that lists what exists."""
    fam = _FAMILIES.get(name)
    if fam is None:
        for candidate in _FAMILIES.values():
            if name in candidate.variants and full_name(candidate, name) == name:
                if variant is not None and variant != name:
                    raise EdgevitError(f"model {name!r} already names variant {name!r}; drop --variant")
                return candidate, name
        for candidate in sorted(_FAMILIES.values(), key=lambda f: -len(f.name)):
            prefix = candidate.name + "_"
            if name.startswith(prefix) and name[len(prefix) :] in candidate.variants:
                if variant is not None and variant != name[len(prefix) :]:
                    raise EdgevitError(f"model {name!r} already names variant {name[len(prefix) :]!r}; drop --variant")
                return candidate, name[len(prefix) :]
        raise EdgevitError(
            f"unknown model {name!r}; valid models: {', '.join(sorted(_FAMILIES))} (see `edgevit models`)"
        )
    variant = variant or fam.default_variant
    if variant not in fam.variants:
        raise EdgevitError(f"unknown variant {variant!r} of {fam.name}; valid variants: {', '.join(fam.variants)}")
    return fam, variant


def create(name: str, variant: str | None = None, checkpoint: str | Path | None = None, **overrides: Any) -> nn.Module:
    """Build a registered model; `overrides` replace fields of the variant's config dataclass."""
    fam, variant = resolve(name, variant)
    config = fam.variants[variant]
    if overrides:
        fields = {f.name for f in dataclasses.fields(config)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise EdgevitError(f"{fam.name} has no config field(s) {unknown}; valid: {sorted(fields)}")
        config = dataclasses.replace(config, **overrides)
    model = fam.build(config, variant)
    if checkpoint is not None:
        from edgevit.models.checkpoint import load_checkpoint

        load_checkpoint(model, checkpoint)
    return model.eval()
