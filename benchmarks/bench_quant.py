"""A quantized bundle's plan, as the results and the report show it: per unit and layer, the bits chosen and,
where the plan was searched (mixed precision), the layer's measured sensitivity and why it got those bits.

Read from the bundle's own files: the manifest's `quant` section names each unit's QuantPlan JSON, whose layers
hold the weight/activation bits and whose `metadata.allocation` (written by quant/mixed_precision.py's greedy
search) holds, per layer, the output SQNR with that layer alone quantized at its bits (`sqnr_db`), the loss
against its highest candidate (`sqnr_drop_db`), its share of the predicted output noise, its cost under each
budget and the step that gave it its bits. A uniform plan records no sensitivity, and the table says so. The
plan is read as plain JSON, so this works with plans of any schema version that keeps those fields.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def quant_facts(bundle: Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The `quant` part of the results (None for a float bundle)."""
    section = manifest.get("quant")
    if not section:
        return None
    units = []
    for name, unit in section["units"].items():
        try:
            plan = json.loads((Path(bundle) / unit["plan"]).read_text())
        except (OSError, ValueError) as exc:
            units.append({"unit": name, "note": f"plan {unit['plan']} unreadable ({exc})", "layers": []})
            continue
        allocation = plan.get("metadata", {}).get("allocation") or {}
        searched = allocation.get("layers", {})
        layers = []
        for layer in plan.get("layers", []):
            got = searched.get(layer["name"], {})
            layers.append({
                "layer": layer["name"],
                "kind": layer["kind"],
                "weight_bits": (layer.get("weight") or {}).get("bits"),
                "act_bits": (layer.get("inputs") or [{}])[0].get("bits"),
                "sqnr_db": got.get("sqnr_db"),
                "sqnr_drop_db": got.get("sqnr_drop_db"),
                "noise_share": got.get("noise_share"),
                "why": got.get("why"),
            })  # fmt: skip
        units.append({
            "unit": name,
            "summary": unit["summary"],
            "predicted_sqnr_db": plan.get("metadata", {}).get("predicted_sqnr_db"),
            "budgets": allocation.get("budgets", []),
            "sensitivity": bool(searched),
            "layers": layers,
        })  # fmt: skip
    return {
        "method": section["method"],
        "bits": section["bits"],
        "budget_mb": section["budget_mb"],
        "calibration": section["calibration"],
        "units": units,
    }
