"""Fidelity beside speed: every artifact's outputs against the reference artifact of its unit, same inputs.

The reference of a unit is its first fp32 artifact that ran here (manifest order): the parity gate held it
within 60 dB SQNR of eager PyTorch when it was converted, so a difference of a few dB between a quantized
artifact and it is the quantization, not the reference. Per output the SQNR is computed over all inputs at
once; for a classifier (task "classification", a [1, classes] output) top-1 agreement is the fraction of inputs
whose argmax class is the reference's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from converters.parity import sqnr_db

Key = tuple[str, str, str]  # unit, target, precision


def reference_of(rows: Sequence[dict[str, Any]], unit: str, outputs: Mapping[Key, Any]) -> Key | None:
    """The key of `unit`'s reference artifact: its first fp32 row that ran, or None when none did."""
    for row in rows:
        key = (row["unit"], row["target"], row["precision"])
        if row["unit"] == unit and row["precision"] == "fp32" and key in outputs:
            return key
    return None


def compare(
    ref: Sequence[tuple[np.ndarray, ...]], test: Sequence[tuple[np.ndarray, ...]], names: Sequence[str], task: str
) -> dict[str, Any]:
    """SQNR per output over all inputs, their minimum, and top-1 agreement for a classifier's logits."""
    per_output = {}
    for j, name in enumerate(names):
        a = np.concatenate([r[j].ravel() for r in ref])
        b = np.concatenate([t[j].ravel() for t in test])
        per_output[name] = sqnr_db(a, b)
    result: dict[str, Any] = {"sqnr_db": per_output, "min_sqnr_db": min(per_output.values())}
    logits = ref[0][0]
    if task == "classification" and logits.ndim == 2 and logits.shape[0] == 1 and logits.shape[1] > 1:
        agree = [int(np.argmax(r[0])) == int(np.argmax(t[0])) for r, t in zip(ref, test, strict=True)]
        result["top1_agreement"] = sum(agree) / len(agree)
    return result


def fidelity_rows(rows: list[dict[str, Any]], outputs: Mapping[Key, Any], task: str) -> None:
    """Add `fidelity` to every row in place: figures vs its unit's reference, or a note saying why none."""
    for row in rows:
        key = (row["unit"], row["target"], row["precision"])
        ref = reference_of(rows, row["unit"], outputs)
        if key not in outputs:
            row["fidelity"] = {"note": row.get("reason", "not run")}
        elif ref is None:
            row["fidelity"] = {"note": "no fp32 artifact of this unit ran here to compare with"}
        elif ref == key:
            row["fidelity"] = {"note": "reference (fp32)", "reference": "/".join(ref)}
        else:
            figures = compare(outputs[ref], outputs[key], row["outputs"], task)
            row["fidelity"] = {"reference": "/".join(ref), "inputs": len(outputs[key]), **figures}
