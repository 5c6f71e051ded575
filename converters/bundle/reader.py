"""The reader apps and runners mirror: a bundle is untrusted input, so its manifest is validated (`validate`)
and an artifact's path, size and sha256 are checked before any runtime opens it.

Files must lie inside the bundle and be the bytes that were converted: a runtime's parser is not a security
boundary, and a changed file would silently give other numbers. Every problem is one `BundleError` line.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from converters.artifact import files_of, size_and_sha256
from converters.bundle.errors import BundleError, Label, problem, quoted, safe_text
from converters.bundle.manifest import MANIFEST
from converters.bundle.validate import parse, validate

# Real manifests are tens of kB; a cap keeps a hostile file from filling memory before it is even parsed.
MAX_MANIFEST_BYTES = 16 * 2**20


def read_manifest(bundle: Path) -> dict[str, Any]:
    """Read, parse and validate `bundle/manifest.json`, then check every file it names lies inside the bundle,
    exists and has the recorded size (cheap; the sha256 is checked by `verify_artifact`)."""
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        raise BundleError(
            f"{safe_text(str(bundle), 300)} is not a bundle (no manifest.json); make one with `edgevit convert`"
        )
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{safe_text(str(path), 300)} is {size} bytes, too large for a manifest")
    manifest = validate(parse(path.read_bytes(), path), path)
    for i, art in enumerate(manifest["artifacts"]):
        check_size(bundle, art, ["artifacts", i])
    for name, entry in manifest.get("quant", {}).get("units", {}).items():
        plan = inside(bundle, entry["plan"], ["quant", "units", name, "plan"])
        if not plan.is_file():
            raise problem(path, ["quant", "units", name, "plan"], f"{quoted(entry['plan'])} does not exist")
    return manifest


def inside(bundle: Path, relpath: str, where: list[str | int]) -> Path:
    """`bundle/relpath`, refusing anything that resolves outside the bundle (absolute, `..`, symlinks out)."""
    manifest = Path(bundle) / MANIFEST
    path = Path(bundle) / relpath
    try:
        root = Path(bundle).resolve()
        if Path(relpath).is_absolute() or ".." in Path(relpath).parts or not path.resolve().is_relative_to(root):
            raise problem(manifest, where, f"{quoted(relpath)} points outside the bundle")
        if path.is_dir():  # a package (.mlpackage): none of its entries may lead out either
            for dirpath, dirnames, filenames in os.walk(path):
                for entry in [*dirnames, *filenames]:
                    if not (Path(dirpath) / entry).resolve().is_relative_to(root):
                        raise problem(manifest, where, f"{quoted(relpath)} links outside the bundle")
    except (OSError, RuntimeError) as exc:  # a symlink loop, a permission problem
        raise problem(manifest, where, f"{quoted(relpath)} cannot be resolved ({safe_text(str(exc))})") from None
    return path


def check_size(bundle: Path, art: dict[str, Any], where: list[str | int]) -> Path:
    """The artifact's path inside the bundle, after checking it exists and has the recorded size."""
    path = inside(bundle, art["path"], [*where, "path"])
    manifest = Path(bundle) / MANIFEST
    if not path.exists():
        raise problem(manifest, [*where, "path"], f"{quoted(art['path'])} does not exist; the bundle is incomplete")
    size = sum(f.stat().st_size for f in files_of(path))
    if size != art["size_bytes"]:
        raise problem(
            manifest,
            [*where, "size_bytes"],
            f"{quoted(art['path'])} is {size} bytes, the manifest says {art['size_bytes']}: "
            "the file was changed after conversion; convert again",
        )
    return path


@functools.cache
def _digest(path: Path, stamp: tuple[tuple[str, int, int, int], ...]) -> str:
    """sha256 of a file or package, once per process for the same bytes on disk (`stamp` changes if they do)."""
    return size_and_sha256(path)[1]


def _stamp(path: Path) -> tuple[tuple[str, int, int, int], ...]:
    return tuple((str(f), (s := f.stat()).st_size, s.st_mtime_ns, s.st_ino) for f in files_of(path))


def verify_artifact(bundle: Path, art: dict[str, Any], index: int | None = None) -> Path:
    """The artifact's path once its size and sha256 match the manifest (streamed, hashed once per process)."""
    where: list[str | int] = (
        ["artifacts", index] if index is not None else [Label(f"artifacts[{safe_text(art['unit'])}/{art['target']}]")]
    )
    path = check_size(bundle, art, where)
    resolved = path.resolve()
    if _digest(resolved, _stamp(resolved)) != art["sha256"]:
        raise problem(
            Path(bundle) / MANIFEST,
            [*where, "sha256"],
            f"{quoted(art['path'])} does not match its sha256: the file was changed after conversion; convert again",
        )
    return path


def artifact_for(manifest: dict[str, Any], unit: str, target: str | None) -> dict[str, Any]:
    """The artifact of `unit` for `target` (or the first runnable one if target is None)."""
    found = [a for a in manifest["artifacts"] if a["unit"] == unit and (target is None or a["target"] == target)]
    if target is None:
        found = [a for a in found if a["parity"] is not None]
    if not found:
        have = sorted({a["target"] for a in manifest["artifacts"]})
        wanted = safe_text(target or "runnable")
        raise BundleError(f"bundle has no {wanted} artifact for unit {unit!r}; it holds: {', '.join(have)}")
    return found[0]


def unit_runner(bundle: Path, artifact: dict[str, Any], num_threads: int | None = None, index: int | None = None):
    """A torch-in/torch-out callable over an artifact's runtime (the form a tracker drives), once the file's
    size and sha256 match the manifest."""
    import torch

    from converters import RuntimeUnavailableError, load_runner

    path = verify_artifact(bundle, artifact, index)
    try:
        runner = load_runner(artifact["target"], path, num_threads)
    except RuntimeUnavailableError as exc:
        raise BundleError(f"cannot run {artifact['target']} artifacts here: {exc}") from None
    except Exception as exc:  # the bytes are the converted ones, so this is a runtime/version mismatch
        first = safe_text(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        raise BundleError(f"the {artifact['target']} runtime cannot load {quoted(artifact['path'])}: {first}") from None

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(o) for o in runner.run(*(x.numpy() for x in inputs)))

    return run
