"""The one bundle writer, for float and quantized bundles alike: a folder of artifacts plus `manifest.json`.

A bundle is built in a temporary folder and renamed into place only when every artifact has converted and
passed its parity check and the manifest validates, so a failed run leaves nothing behind. The caller runs the
conversion loop (this package never sees a model): `lower(folder)` converts into `folder/<target>/` and
yields each `Artifact`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from converters.artifact import Artifact
from converters.bundle.manifest import MANIFEST, ArtifactEntry, Header, Manifest, QuantSection
from converters.bundle.output import atomic_dir
from converters.bundle.validate import parse, validate


def write_bundle(
    out: Path,
    header: Header,
    lower: Callable[[Path], Iterable[Artifact]],
    *,
    quant: QuantSection | None = None,
    files: Mapping[str, str] | None = None,
    log: Path | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write a bundle into `out` and return its manifest as readers of the file will see it.

    `files` (path in the bundle → text, e.g. the quantization plans) are written before `lower` runs; `log`
    (the backends' output) is copied in as `convert.log` last. An existing `out` is replaced only with `force`
    and only if it is an output this package wrote (see `output`).
    """
    with atomic_dir(out, force) as folder:
        for relpath, text in (files or {}).items():
            path = folder / relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        artifacts = [ArtifactEntry.from_artifact(art, folder) for art in lower(folder)]
        text = write_manifest(folder, Manifest.new(header, artifacts, quant))
        if log is not None:
            shutil.copyfile(log, folder / "convert.log")  # with the user's permissions, not the temp file's 0600
    return json.loads(text)  # lists, not tuples; "inf" strings, not floats


def write_manifest(folder: Path, manifest: Manifest) -> str:
    """Write `manifest.json` only if what a reader will parse is valid: a writer bug must not ship a bundle
    that apps refuse. Strict JSON (a bare NaN or Infinity is refused, not written). Returns the text written."""
    text = json.dumps(manifest.to_dict(), indent=2, allow_nan=False) + "\n"
    where = f"{MANIFEST} (being written)"
    validate(parse(text.encode(), where), where)
    (folder / MANIFEST).write_text(text, encoding="utf-8")
    return text
