"""`edgevit models`: the registry as a table, with parameter counts from meta-device builds (no memory)."""

from __future__ import annotations

import json
import warnings

import torch
from rich.console import Console
from rich.table import Table

from edgevit.models import families
from edgevit.models.registry import full_name
from edgevit.models.spec import count_parameters


def rows() -> list[dict]:
    out = []
    for fam in families().values():
        for variant, cfg in fam.variants.items():
            try:
                # meta tensors count parameters without allocating them; importers copying real weights
                # into them warn that the copy is a no-op, which is what we want here
                with torch.device("meta"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    model = fam.build(cfg, variant)
            except (NotImplementedError, RuntimeError):  # a builder that reads tensor values needs real ones
                model = fam.build(cfg, variant)
            out.append(
                {
                    "model": fam.name,
                    "variant": variant,
                    "name": full_name(fam, variant),
                    "default": variant == fam.default_variant,
                    "input_size": list(model.spec.input_size),
                    "parameters": count_parameters(model),
                    "task": model.spec.task,
                    # e.g. EfficientTAM's pooled memory at 512: the official classes build it, no release has weights
                    "note": "" if getattr(cfg, "official_checkpoint", True) else "no official checkpoint",
                }
            )
    return out


def list_models(as_json: bool) -> None:
    data = rows()
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = Table(title="edgevit models")
    for col in ("model", "variant", "input", "parameters", "task", "note"):
        table.add_column(col, justify="right" if col == "parameters" else "left")
    for r in data:
        variant = r["variant"] + (" (default)" if r["default"] else "")
        h, w = r["input_size"]
        table.add_row(r["model"], variant, f"{h}x{w}", f"{r['parameters'] / 1e6:.2f} M", r["task"], r["note"])
    Console().print(table)
