"""Strict loading of official checkpoints, with one-line errors instead of PyTorch's key dumps."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from edgevit.errors import EdgevitError


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _short(keys: list[str], n: int = 4) -> str:
    head = ", ".join(keys[:n])
    return head + (f" … (+{len(keys) - n} more)" if len(keys) > n else "")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read `{"model": state_dict}` (the official format) or a bare state dict; never unpickles code."""
    path = Path(path)
    if not path.is_file():
        raise EdgevitError(f"checkpoint {str(path)!r} does not exist; pass the path of a .pt file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a corrupt or non-torch file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgevitError(f"checkpoint {str(path)!r} is not a readable torch file ({first[:160]})") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EdgevitError(f"checkpoint {str(path)!r} holds no state dict (expected {{'model': state_dict}})")
    return obj


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load strictly; a model may offer `remap_state_dict(sd)` for one explicit, tested key map."""
    sd = read_state_dict(path)
    remap = getattr(model, "remap_state_dict", None)
    if remap is not None:
        sd = remap(sd)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_short(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_short(unexpected)}")
        raise EdgevitError(
            f"checkpoint {Path(path).name!r} does not match {name}: {'; '.join(parts)} — "
            "pick the variant the checkpoint was trained as (see `edgevit models`)"
        )
    bad = [k for k in own if own[k].shape != sd[k].shape]
    if bad:
        k = bad[0]
        raise EdgevitError(
            f"checkpoint {Path(path).name!r} does not match {name}: {len(bad)} tensor(s) of another shape, "
            f"e.g. {k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)} — pick the matching variant"
        )
    model.load_state_dict(sd, strict=True)
