"""The one entry point for lowering a deploy unit: `convert(unit, target, precision, out_dir) -> Artifact`.

What a target is called, writes and needs comes from `converters.targets.registry`; its code lives in its
package under `converters/targets/` and is imported only when asked for, so `import converters` costs no
backend import. `stage_artifact` (write under a hidden name, check, rename) is shared by the fp and the
quantized lowering (`converters.quantized`).
"""

from __future__ import annotations

import re
import shutil
import time
import uuid
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from converters.artifact import Artifact, OutputParity, TargetResult, size_and_sha256
from converters.errors import ConversionError, RuntimeUnavailableError
from converters.parity import MIN_SQNR_DB, check_parity
from converters.runtime import load_runner
from converters.targets.registry import TargetInfo, target_info
from converters.unit import DeployUnit

__all__ = ["ConversionError", "check_unit", "convert", "lowering_error", "stage_artifact"]


def artifact_path(unit: DeployUnit, target: str, precision: str, out_dir: Path) -> Path:
    """Where `convert` puts the artifact: one file (or package) per unit, target and precision."""
    return Path(out_dir) / f"{unit.name}.{precision}{target_info(target).suffix}"


def convert(
    unit: DeployUnit,
    target: str,
    precision: str | None = None,
    out_dir: Path = Path("."),
    *,
    parity_inputs: tuple[Any, ...] | None = None,
    min_sqnr_db: float | None = None,
) -> Artifact:
    """Lower `unit` for `target`, validate the written file, check parity where it can run, and return it.

    The artifact is written under a hidden temporary name in `out_dir` and renamed into place only after it
    loads and passes parity, so a failure at any step leaves no file (and no half-written package) behind
    and never clobbers a previous good artifact. `precision` None means the target's default. Parity runs on
    `parity_inputs` (tensors in the unit's input order) or the unit's example inputs; the SQNR floor is
    `min_sqnr_db` or the precision's default from `converters.parity.MIN_SQNR_DB`.
    """
    info = target_info(target)
    precision = precision or info.default_precision
    if precision not in info.precisions:
        valid = ", ".join(info.precisions)
        raise ConversionError(f"target {target!r} does not support precision {precision!r}; valid: {valid}")
    check_unit(unit)
    floor = MIN_SQNR_DB[precision] if min_sqnr_db is None else min_sqnr_db

    return stage_artifact(
        unit,
        target,
        precision,
        out_dir,
        lower=lambda tmp: _run_target(info, unit, precision, tmp),
        check=lambda tmp, result: _parity(unit, target, tmp, parity_inputs, floor),
        backends=info.backends,
        floor=floor,
    )


def stage_artifact(
    unit: DeployUnit,
    target: str,
    precision: str,
    out_dir: Path,
    *,
    lower: Callable[[Path], TargetResult],
    check: Callable[[Path, TargetResult], tuple[dict[str, OutputParity] | None, str | None]],
    backends: tuple[str, ...],
    floor: float,
) -> Artifact:
    """Write an artifact under a hidden temporary name, validate and parity-check it, then rename it.

    Every lowering path (fp and quantized) goes through here, so a failure at any step leaves no file (and
    no half-written package) behind and never clobbers a previous good artifact. `lower(tmp)` writes the
    file; `check(tmp, result)` returns the parity figures or a note saying why none could be taken.
    """
    out_dir = Path(out_dir)
    final = artifact_path(unit, target, precision, out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConversionError(f"cannot create output directory {out_dir}: {exc.strerror or exc}") from exc
    tmp = out_dir / f".{unit.name}.{precision}.tmp-{uuid.uuid4().hex[:8]}{target_info(target).suffix}"

    try:
        start = time.perf_counter()
        result = lower(tmp)
        seconds = time.perf_counter() - start
        _check_names(unit, target, result)
        figures, note = check(tmp, result)
        _move_into_place(tmp, final)
    except BaseException:
        _remove(tmp)
        raise

    size, digest = size_and_sha256(final)
    return Artifact(
        target=target,
        unit=unit.name,
        path=final,
        precision=precision,
        inputs=result["inputs"],
        outputs=result["outputs"],
        size_bytes=size,
        sha256=digest,
        versions=backend_versions(backends),
        conversion_seconds=seconds,
        parity=figures,
        parity_note=note,
        min_sqnr_db=floor if figures is not None else None,
        facts=result["facts"],
    )


def lowering_error(exc: BaseException, unit: DeployUnit, target: str) -> ConversionError:
    """Turn a backend's exception into one line naming the op it choked on (when it says) and a fallback.

    Backends word this differently (Core ML "Unsupported fx node X", ExecuTorch "<EdgeOpOverload: X>", the
    torch.fx interpreter "target=torch.ops.X"), so the op is fished out with a few patterns; without one the
    backend's first line is kept. The reason shown is the innermost cause's, because exporters wrap the real
    complaint ("only 4D query, key, and value are supported") in generic "conversion failed" layers.
    """
    chain = [exc]
    while chain[-1].__cause__ is not None and len(chain) < 20:
        chain.append(chain[-1].__cause__)
    op = _op_named_in("\n".join(_ANSI.sub("", str(e)) for e in chain))
    fallback = target_info(target).fallback
    root = next((e for e in reversed(chain) if str(e).strip()), exc)
    first = _first_line(_ANSI.sub("", str(root))) or type(root).__name__
    if op:
        return ConversionError(
            f"{target} cannot lower op {op!r} in unit {unit.name!r} ({first}); try --target {fallback}"
        )
    return ConversionError(
        f"{target} failed to convert unit {unit.name!r}: {type(root).__name__}: {first}; try --target {fallback}"
    )


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_OP_PATTERNS = (
    re.compile(r"Unsupported fx node (\w+)"),
    re.compile(r"convert function for op '(\w+)' not implemented"),
    re.compile(r"node \w+ \((\w+)\) got"),
    re.compile(r"target=torch\.ops\.(\w+\.\w+)"),
    re.compile(r"<EdgeOpOverload: (\w+\.\w+)"),
    re.compile(r"Unsupported FX nodes?: \{?'?([\w.:]+)"),
    re.compile(r"\b(aten(?:\.|::)\w+)"),
)


def _op_named_in(text: str) -> str | None:
    for pattern in _OP_PATTERNS:
        if m := pattern.search(text):
            return m.group(1)
    return None


def _first_line(text: str, limit: int = 160) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def check_unit(unit: DeployUnit) -> None:
    """Refuse a unit no target can lower faithfully, before anything is written.

    A unit in training mode would convert dropout/batch-norm updates and make eager parity meaningless.
    """
    if _in_training_mode(unit.module):
        raise ConversionError(f"unit {unit.name!r} is in training mode; call .eval() on its module first")
    names = (*unit.input_names, *unit.output_names)
    if len(set(names)) != len(names) or not all(names):
        raise ConversionError(f"unit {unit.name!r}: input/output names must be unique and non-empty: {names}")


def _in_training_mode(module: nn.Module) -> bool:
    """Whether `module` runs train-mode behaviour. An exported graph (PT2E's, `torch.export`'s `.module()`) fixed
    that behaviour at export and its `.training` flag stays True whatever `.eval()` does, so its ops are read
    instead: a train-mode op (an op with a true `train`/`training` argument), a submodule in training mode, or
    a Python-level call that cannot be read counts as training."""
    if not module.training:
        return False
    if not isinstance(module, torch.fx.GraphModule):
        return True
    for graph in (m for m in module.modules() if isinstance(m, torch.fx.GraphModule)):  # control flow's subgraphs too
        for node in graph.graph.nodes:
            if node.op == "call_module" and _module_trains(graph.get_submodule(node.target)):
                return True
            if node.op == "call_function" and _trains(node):
                return True
    return False


def _module_trains(module: nn.Module) -> bool:
    """A module a graph calls: subgraphs are read on their own, and export's own helpers (its input-guard check)
    have no train-mode behaviour whatever their flag says."""
    if isinstance(module, torch.fx.GraphModule) or type(module).__module__.startswith("torch.export."):
        return False
    return _in_training_mode(module)


def _trains(node: torch.fx.Node) -> bool:
    target = node.target
    if isinstance(target, torch._ops.HigherOrderOperator) or getattr(target, "__module__", None) == "_operator":
        return False  # control flow (its subgraphs are read on their own) or getitem
    schema = getattr(target, "_schema", None)
    if schema is None:
        return True
    for i, arg in enumerate(schema.arguments):
        if arg.name in ("train", "training"):
            value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name, arg.default_value)
            if value is not False:
                return True
    return False


def _run_target(info: TargetInfo, unit: DeployUnit, precision: str, tmp: Path) -> TargetResult:
    try:
        return info.part("lower").convert(unit, precision, tmp)
    except ConversionError:
        raise
    except OSError as exc:
        raise ConversionError(f"{info.name}: cannot write {tmp}: {exc.strerror or exc}") from exc
    except Exception as exc:
        raise lowering_error(exc, unit, info.name) from exc


def _check_names(unit: DeployUnit, target: str, result: TargetResult) -> None:
    # Apps look tensors up by name; a backend that silently renamed one would ship a file the app can't drive.
    got_in = tuple(t.name for t in result["inputs"])
    got_out = tuple(t.name for t in result["outputs"])
    if got_in != unit.input_names or got_out != unit.output_names:
        raise ConversionError(
            f"{target} artifact of unit {unit.name!r} has I/O names {got_in} -> {got_out}, "
            f"expected {unit.input_names} -> {unit.output_names}"
        )


def _parity(
    unit: DeployUnit, target: str, path: Path, inputs: tuple[Any, ...] | None, floor: float
) -> tuple[dict | None, str | None]:
    try:
        runner = load_runner(target, path)
    except RuntimeUnavailableError as exc:
        return None, str(exc)
    except Exception as exc:
        reason = _first_line(str(exc))
        raise ConversionError(f"{target} artifact of unit {unit.name!r} does not load: {reason}") from exc
    return check_parity(unit, runner, inputs, min_sqnr_db=floor), None


def _move_into_place(tmp: Path, final: Path) -> None:
    """Rename `tmp` to `final`, replacing an older artifact; a directory is swapped via a side name because
    rename(2) will not replace a non-empty directory."""
    try:
        if tmp.is_dir() and final.exists():
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            final.rename(old)
            tmp.rename(final)
            _remove(old)
        else:
            tmp.replace(final)
    except OSError as exc:
        raise ConversionError(f"cannot move artifact into place at {final}: {exc.strerror or exc}") from exc


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def backend_versions(backends: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of torch and `backends` ("not installed" for a missing one), as artifacts record them."""
    out = {}
    for dist in ("torch", *backends):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out
