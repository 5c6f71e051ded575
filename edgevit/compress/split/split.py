"""`split_classifier`: a trained classifier + labelled data + devices → one bundle per device and `fusion.json`.

Order matters for a user's time: everything that can refuse the input (class count, device count, the memory
each sub-model needs after pruning) is checked before distillation, the slow step. Every sub-model is derived
from the same full model with the same seed, so a run is reproducible; the spec records the held-out accuracy
of the full model and of the fused sub-models (eager), so what the split cost is written beside what it saved.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgevit.compress.split.devices import Device, assign
from edgevit.compress.split.fusion import SPEC_FILE, DeviceEntry, FusionSpec, fuse_scores, manifest_sha256
from edgevit.compress.split.submodel import (
    DistillSettings,
    check_classifier,
    distill,
    parameter_count,
    partition_classes,
    prune_for,
    rehead,
)

BYTES_PER_WEIGHT = 4  # float32 artifacts


@dataclass(frozen=True)
class SplitSettings:
    prune_budget: float = 0.5  # fraction of the full model's parameters each sub-model loses (0: no pruning)
    distill: DistillSettings = field(default_factory=DistillSettings)
    seed: int = 0
    targets: tuple[str, ...] = ("onnx",)


@dataclass
class SubModelResult:
    device: Device
    classes: list[int]
    module: nn.Module
    prune: dict[str, Any]
    distill: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Split:
    spec: FusionSpec
    results: list[SubModelResult]


def split_classifier(
    full: nn.Module,
    data: Any,
    devices: Sequence[Device],
    settings: SplitSettings,
    out: Path,
    *,
    checkpoint: Path | None = None,
    force: bool = False,
    say: Callable[[str], None] = lambda _: None,
    progress: bool = False,
) -> Split:
    """Split `full` (loaded from `checkpoint`, trained on `data`, an `edgevit.compress.matformer.data.LabelledData`)
    across `devices`, write the bundles and the fusion spec into `out`; returns the spec and the eager sub-models."""
    from edgevit.training.distill import predict

    check_classifier(full, len(data.classes))
    parts = partition_classes(len(data.classes), len(devices))
    train_images = data.train.images
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        teacher = predict(full, train_images)
        subs = []
        for classes in parts:
            say(f"pruning the sub-model for classes {_names(data.classes, classes)}")
            module, report = prune_for(full, classes, settings.prune_budget, train_images, settings.seed)
            rehead(module, classes)
            subs.append((classes, module, report))
        needs = [parameter_count(m) * BYTES_PER_WEIGHT for _, m, _ in subs]
        chosen = assign(needs, devices, [_names(data.classes, c) for c, _, _ in subs])
        results = [SubModelResult(d, c, m, r) for d, (c, m, r) in zip(chosen, subs, strict=True)]
        for r in results:
            say(f"distilling {r.device.name}: classes {_names(data.classes, r.classes)}")
            r.distill = distill(
                r.module, train_images, teacher, r.classes, settings.distill, settings.seed, progress, r.device.name
            )
    metrics = evaluate(full, results, data)
    spec = _write(full, results, data, settings, metrics, out, force, checkpoint, say)
    return Split(spec, results)


def evaluate(full: nn.Module, results: Sequence[SubModelResult], data: Any) -> dict[str, Any]:
    """Held-out figures: full vs fused (eager) accuracy, their top-1 agreement, and each sub-model's size."""
    from edgevit.training.distill import predict

    images, labels = data.test.images, data.test.labels.numpy()
    full_top1 = predict(full, images).argmax(-1).numpy()
    spec = _spec(results, data, {}, {})
    fused = fuse_scores(spec, {r.device.name: predict(r.module, images).numpy() for r in results}).argmax(-1)
    full_params = parameter_count(full)
    return {
        "held_out_images": len(labels),
        "full_accuracy": float((full_top1 == labels).mean()),
        "fused_accuracy": float((fused == labels).mean()),
        "fused_top1_agreement_with_full": float((fused == full_top1).mean()),
        "full_parameters": full_params,
        "sub_parameters": {r.device.name: parameter_count(r.module) for r in results},
        "largest_sub_size_reduction": full_params / max(parameter_count(r.module) for r in results),
    }


def _names(classes: Sequence[str], indices: Sequence[int]) -> str:
    shown = [classes[i] for i in indices]
    return "[" + ", ".join(shown[:6]) + (", …" if len(shown) > 6 else "") + "]"


def _spec(results: Sequence[SubModelResult], data: Any, shas: dict[str, str], metrics: dict[str, Any]) -> FusionSpec:
    model_spec = results[0].module.spec
    entries = tuple(
        DeviceEntry(
            r.device.name,
            r.device.name,
            shas.get(r.device.name, ""),
            tuple(r.classes),
            r.device.memory_mb,
            parameter_count(r.module) * BYTES_PER_WEIGHT,
            r.device.address,
        )
        for r in results
    )
    return FusionSpec(
        tuple(data.classes),
        entries,
        tuple(model_spec.input_size),
        tuple(model_spec.mean),
        tuple(model_spec.std),
        metrics,
    )


def _write(
    full: nn.Module,
    results: Sequence[SubModelResult],
    data: Any,
    settings: SplitSettings,
    metrics: dict[str, Any],
    out: Path,
    force: bool,
    checkpoint: Path | None,
    say: Callable[[str], None],
) -> FusionSpec:
    from converters import ConversionError
    from converters.bundle import PassEntry, atomic_dir
    from edgevit.bundle import weights_of, write_bundle
    from edgevit.quiet import backend_output_to_log

    source = weights_of(full, checkpoint)
    origin = f"ED-ViT sub-model of a {source.source} classifier" + (
        f" (sha256 {source.checkpoint_sha256[:12]}…)" if source.checkpoint_sha256 else ""
    )
    shas: dict[str, str] = {}
    with atomic_dir(out, force) as folder:
        for r in results:
            say(f"lowering {r.device.name} → {', '.join(settings.targets)}")
            r.module.weights_source = f"{origin}, pruned and distilled here for its classes"
            split_info = {
                "device": asdict(r.device),
                "classes": [data.classes[c] for c in r.classes],
                "class_indices": r.classes,
                "outputs": "logits of these classes, then one for 'other' (none of them)",
                "prune_budget": settings.prune_budget,
                "distill": {**asdict(settings.distill), **r.distill},
                "seed": settings.seed,
            }
            passes = [PassEntry("prune", r.prune), PassEntry("split", split_info)]
            with backend_output_to_log("edgevit-split") as (log, _):
                try:
                    write_bundle(r.module, settings.targets, None, folder / r.device.name, log=log, passes=passes)
                except ConversionError as exc:  # the log explains it: kept, and named
                    raise ConversionError(f"{exc} (backend log: {log})") from None
                except BaseException:
                    log.unlink(missing_ok=True)
                    raise
            log.unlink()
            shas[r.device.name] = manifest_sha256(folder / r.device.name)
        spec = _spec(results, data, shas, metrics)
        (folder / SPEC_FILE).write_text(spec.to_json(), encoding="utf-8")
    return spec
