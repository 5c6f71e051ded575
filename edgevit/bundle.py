"""The bundle: a folder of artifacts plus `manifest.json`, the contract between Python and apps/runners.

Apps and benchmark runners read only the manifest (schema-versioned, plain JSON) and the files it names;
they never import model code. A bundle is built in a temporary folder and renamed into place when every
artifact has converted and passed its parity check, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from converters.unit import DeployUnit
from edgevit import manifest as manifest_io
from edgevit.errors import EdgevitError
from edgevit.io import atomic_dir
from edgevit.manifest import SCHEMA, SCHEMA_VERSION

ALL_TARGETS = ("onnx", "executorch", "tflite", "coreml")


def resolve_targets(target: str) -> tuple[str, ...]:
    """`all`, one target, or a comma-separated list of them (e.g. `onnx,tflite`), in the canonical order."""
    if target == "all":
        return ALL_TARGETS
    wanted = [t.strip() for t in target.split(",")]
    unknown = [t for t in wanted if t not in ALL_TARGETS]
    if unknown:
        raise EdgevitError(f"unknown target {unknown[0]!r}; valid targets: {', '.join(ALL_TARGETS)}, all (or a list)")
    return tuple(t for t in ALL_TARGETS if t in wanted)


def _config_dict(model: nn.Module) -> dict[str, Any] | None:
    cfg = getattr(model, "cfg", None)
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else None


def weights_origin(model: nn.Module) -> str:
    """ "checkpoint", "random", or what a model that ships its weights says about them (e.g. an import)."""
    if getattr(model, "checkpoint_sha256", None):
        return "checkpoint"
    return getattr(model, "weights_source", None) or "random"


def manifest_header(model: nn.Module, units: Sequence[DeployUnit]) -> dict[str, Any]:
    """Everything in a manifest but the artifacts: what every bundle writer (fp32, quantized) shares."""
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model": {**model.spec.to_dict(), "config": _config_dict(model)},
        "weights": {"source": weights_origin(model), "checkpoint_sha256": getattr(model, "checkpoint_sha256", None)},
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "machine": {"system": platform.system(), "machine": platform.machine()},
        "units": [
            {
                "name": u.name,
                "inputs": [
                    {"name": n, "shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch.")}
                    for n, x in zip(u.input_names, u.example_inputs, strict=True)
                ],
                "outputs": list(u.output_names),
                "image_inputs": list(u.image_inputs),
                "notes": u.notes,
            }
            for u in units
        ],
    }


def write_bundle(
    model: nn.Module,
    targets: Sequence[str],
    precision: str | None,
    out: Path,
    force: bool = False,
    on_artifact: Callable[[str, str], None] | None = None,
    log: Path | None = None,
) -> dict[str, Any]:
    """Convert every deploy unit of `model` for every target into `out`; returns the manifest.

    `log` (the backends' output) is copied in as `convert.log` before the bundle is renamed into place.
    """
    import shutil

    from converters.base import convert

    units = model.deploy_units()
    artifacts = []
    with atomic_dir(out, force) as tmp:
        for target in targets:
            for unit in units:
                if on_artifact is not None:
                    on_artifact(unit.name, target)
                art = convert(unit, target, precision, tmp / target)
                entry = art.to_dict()
                entry["path"] = str(Path(target) / Path(art.path).name)
                artifacts.append(entry)
        manifest = {**manifest_header(model, units), "artifacts": artifacts}
        text = write_manifest(tmp, manifest)
        if log is not None:
            shutil.copyfile(log, tmp / "convert.log")  # with the user's permissions, not the temp file's 0600
    return json.loads(text)  # what readers of the file will see (lists, not tuples)


def write_manifest(folder: Path, manifest: dict[str, Any]) -> str:
    """Write `manifest.json` only if what a reader will parse is valid: a writer bug must not ship a bundle
    that apps refuse. Returns the text written."""
    text = json.dumps(manifest, indent=2, allow_nan=False) + "\n"
    where = f"{manifest_io.MANIFEST} (being written)"
    manifest_io.validate(manifest_io.parse(text.encode(), where), where)
    (folder / manifest_io.MANIFEST).write_text(text, encoding="utf-8")
    return text


def read_manifest(bundle: Path) -> dict[str, Any]:
    """The bundle's manifest, validated against the published schema and checked against itself and the files
    it names (inside the bundle, present, recorded size); anything else is one `EdgevitError` line."""
    return manifest_io.read(bundle)


def artifact_for(manifest: dict[str, Any], unit: str, target: str | None) -> dict[str, Any]:
    """The artifact of `unit` for `target` (or the first runnable one if target is None)."""
    found = [a for a in manifest["artifacts"] if a["unit"] == unit and (target is None or a["target"] == target)]
    if target is None:
        found = [a for a in found if a["parity"] is not None]
    if not found:
        have = sorted({a["target"] for a in manifest["artifacts"]})
        wanted = manifest_io.safe_text(target or "runnable")
        raise EdgevitError(f"bundle has no {wanted} artifact for unit {unit!r}; it holds: {', '.join(have)}")
    return found[0]


def warn_unchecked(artifacts: Sequence[dict[str, Any]]) -> None:
    """One stderr line naming the artifacts about to run that were never parity-checked (Core ML off macOS):
    nothing vouches that they compute what the model does."""
    unchecked = [f"{manifest_io.safe_text(a['unit'])}/{a['target']}" for a in artifacts if a["parity"] is None]
    if unchecked:
        print(
            f"warning: running artifacts never parity-checked against PyTorch: {', '.join(unchecked)}",
            file=sys.stderr,
        )


def unit_runner(bundle: Path, artifact: dict[str, Any], num_threads: int | None = None, index: int | None = None):
    """A torch-in/torch-out callable over an artifact's runtime, the form the tracker drives.

    The file's size and sha256 are checked against the manifest before the runtime parses it: a runtime's
    parser is not a security boundary, and a changed file would silently give other numbers.
    """
    from converters.runtime import RuntimeUnavailableError, load_runner

    path = manifest_io.verify_artifact(bundle, artifact, index)
    try:
        runner = load_runner(artifact["target"], path, num_threads)
    except RuntimeUnavailableError as exc:
        raise EdgevitError(f"cannot run {artifact['target']} artifacts here: {exc}") from None
    except Exception as exc:  # the bytes are the converted ones, so this is a runtime/version mismatch
        first = manifest_io.safe_text(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        raise EdgevitError(
            f"the {artifact['target']} runtime cannot load {manifest_io.quoted(artifact['path'])}: {first}"
        ) from None

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(o) for o in runner.run(*(x.numpy() for x in inputs)))

    return run
