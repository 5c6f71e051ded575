"""What a written .mlpackage really holds, as the registry's `facts` role asks for it.

The quantized lowering already reads the saved package back (`program.gemm_weights`, each distinct constant
counted once by `program.stored_bytes`) into its record's `weight_storage`; the bytes are summed from there, so
the package is not decoded twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def written_weight_bytes(path: Path, quant: dict[str, Any]) -> int | None:
    """Bytes of the planned weights (integers or palette indices, LUTs, scales, offsets) the package at `path`
    stores, from the lowering's `quant` record; None when the record has no storage read back."""
    if "weight_storage" not in quant:
        return None
    return int(sum(kind["bytes"] for kind in quant["weight_storage"].values()))
