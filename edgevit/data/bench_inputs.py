"""The inputs `edgevit bench` and `edgevit farm` bench a bundle on: the bundle stores no reference inputs, so
image inputs (the model's [1, 3, H, W] float input) are the photos scikit-image ships, preprocessed as the
manifest says (normalised, or 0..255 for a unit that takes the image raw); every other input is drawn from a
seeded generator in the unit's shape and dtype. Shared by both commands, so a farm's fidelity figures are the
ones a plain bench gives."""

from __future__ import annotations

from typing import Any

import numpy as np

FIDELITY_INPUTS = 8


def bench_inputs(manifest: dict[str, Any]) -> tuple[dict[str, list[tuple[np.ndarray, ...]]], str]:
    """Per unit, `FIDELITY_INPUTS` input tuples (photos for the image input, seeded random for the rest)."""
    from edgevit.data.images import load_rgb, preprocess
    from edgevit.models.spec import ModelSpec

    model = manifest["model"]
    size = list(model["input_size"])
    photos, record = load_rgb("builtin", min_images=1, max_images=FIDELITY_INPUTS)
    spec = ModelSpec(
        model["name"], model["variant"], tuple(size), model["task"], tuple(model["mean"]), tuple(model["std"])
    )
    raw = ModelSpec(model["name"], model["variant"], tuple(size), model["task"], (0.0, 0.0, 0.0), (1 / 255,) * 3)
    inputs: dict[str, list[tuple[np.ndarray, ...]]] = {}
    for unit in manifest["units"]:
        rng = np.random.default_rng(0)
        samples = []
        for s in range(FIDELITY_INPUTS):
            sample = []
            for tensor in unit["inputs"]:
                if tensor["shape"] == [1, 3, *size] and tensor["dtype"] == "float32":
                    how = raw if tensor["name"] in unit["image_inputs"] else spec
                    sample.append(preprocess(photos[s % len(photos)], how).numpy())
                else:
                    sample.append(random_input(rng, tensor["shape"], tensor["dtype"]))
            samples.append(tuple(sample))
        inputs[unit["name"]] = samples
    note = (
        f"{FIDELITY_INPUTS} inputs per unit: image inputs from {record['used']} photo(s) scikit-image ships "
        "(resized, centre-cropped, normalised as the manifest says), other inputs seeded random (seed 0); "
        "the first is the one timed"
    )
    return inputs, note


def random_input(rng: np.random.Generator, shape: list[int], dtype: str) -> np.ndarray:
    """A seeded input of `shape`: standard normal floats, 0/1 for bool, small non-negative integers."""
    if dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.startswith(("int", "uint")):
        return rng.integers(0, 2, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)
