"""The one list of targets: what each is called, writes, holds and needs, and where its code lives.

Every place that names targets (the `convert` dispatch, the quantized bit checks, `--target` parsing, the
benchmark suites) reads this list, so adding a target is its package under `converters/targets/` plus one
`TargetInfo` line below. A target package holds modules by role, imported only when a conversion asks for
them (so `import converters` imports no backend):
- `lower`: `convert(unit, precision, path) -> TargetResult` (fp lowering, written to `path`, read back);
- `runner`: `load_runner(path, num_threads) -> Runner`;
- `quantized`: `lowering(plan, options) -> Lowering`, where a `Lowering` writes the plan's integer artifact
  and returns it with its torch reference (see `converters.quantized`);
- `facts`: what a written artifact really holds, read back from the file — where `reads_weight_bytes` says so,
  `written_weight_bytes(path, quant) -> int | None` (the planned weights' bytes: integers, scales, zero points).
"""

from __future__ import annotations

import importlib
import platform
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

from converters.errors import ConversionError

# What `platform.system()` says, in the words a user knows.
_OS_NAMES = {"Darwin": "macOS", "Linux": "Linux", "Windows": "Windows"}


@dataclass(frozen=True)
class TargetInfo:
    """One target: its files, its precisions, the integer widths its quantized artifacts hold, its runtime."""

    name: str
    # Python package holding `lower`, `runner`, `quantized` and `facts` (imported lazily, see `part`).
    package: str
    # File suffix of an artifact (a .mlpackage is a directory).
    suffix: str
    # Float precisions `convert` offers here.
    precisions: tuple[str, ...]
    default_precision: str
    # Weight widths a quantized artifact holds as integers, ascending.
    weight_bits: tuple[int, ...]
    # Activations in a quantized artifact: on the plan's fixed grids ("static"), or quantized inside each
    # kernel at run time ("dynamic", the plan's activation grids unused).
    activations: Literal["static", "dynamic"]
    # Distributions whose versions every artifact records (torch is always recorded).
    backends: tuple[str, ...]
    # The target to suggest when this one cannot lower an op.
    fallback: str
    # Activation widths of a quantized artifact.
    act_bits: tuple[int, ...] = (8,)
    # An all-8-bit plan's artifact is called "int8" (else by its widths, e.g. "w8a8", as Core ML's always are).
    names_int8: bool = True
    # `platform.system()` values where the runtime exists (empty: everywhere its wheel installs) and the name
    # of what needs it, for the reason given elsewhere.
    runs_on: tuple[str, ...] = ()
    runtime: str = ""
    # 4-bit Linear weights lowered group-wise (blocks of columns, each its own scale) for any model, so plans
    # for this target may use group-wise grids. LiteRT has a blockwise path but refuses models whose converter
    # folds a LayerNorm into the next weight (converters/targets/tflite/blockwise.py), so plans keep per-channel.
    group_weights: bool = False
    # Its `facts` part reads back the weight bytes a written quantized artifact holds; False where the format is
    # not read (an ExecuTorch program's XNNPACK blobs, a LiteRT flatbuffer), so nothing unmeasured is claimed.
    reads_weight_bytes: bool = False

    def __post_init__(self) -> None:
        if self.default_precision not in self.precisions:
            raise ValueError(f"{self.name}: default precision {self.default_precision!r} not in {self.precisions}")

    def why_not_here(self) -> str | None:
        """Why this machine cannot run the target's artifacts, or None when it can."""
        here = platform.system()
        if not self.runs_on or here in self.runs_on:
            return None
        needs = " or ".join(_OS_NAMES.get(s, s) for s in self.runs_on)
        return f"{self.runtime} needs {needs} (this is {_OS_NAMES.get(here, here)})"

    def runs_here(self) -> bool:
        """Whether this machine can run the target's artifacts (parity and timing need it)."""
        return self.why_not_here() is None

    def part(self, role: str) -> ModuleType:
        """The target's `lower`, `runner`, `quantized` or `facts` module, imported on first use."""
        return importlib.import_module(f"{self.package}.{role}")


_ALL = (
    TargetInfo(
        "onnx", "converters.targets.onnx", ".onnx", ("fp32",), "fp32", (4, 8), "static",
        ("onnx", "onnxruntime", "onnxscript"), "executorch", group_weights=True, reads_weight_bytes=True,
    ),
    TargetInfo(
        "executorch", "converters.targets.executorch", ".pte", ("fp32", "fp16"), "fp32", (4, 8), "dynamic",
        ("executorch",), "onnx", group_weights=True,
    ),
    TargetInfo(
        "tflite", "converters.targets.tflite", ".tflite", ("fp32", "fp16"), "fp32", (4, 8), "dynamic",
        ("litert-torch", "ai-edge-litert"), "executorch",
    ),
    TargetInfo(
        "coreml", "converters.targets.coreml", ".mlpackage", ("fp16", "fp32"), "fp16", (4, 6, 8), "static",
        ("coremltools",), "executorch", names_int8=False, runs_on=("Darwin",), runtime="Core ML prediction",
        group_weights=True, reads_weight_bytes=True,
    ),
)  # fmt: skip

TARGET_INFO: dict[str, TargetInfo] = {t.name: t for t in _ALL}
# Target names in the canonical order (bundles, tables and `all` follow it).
TARGETS: tuple[str, ...] = tuple(TARGET_INFO)


def target_info(target: str) -> TargetInfo:
    """The registry entry of `target`; ConversionError listing the valid targets."""
    if target not in TARGET_INFO:
        raise ConversionError(f"unknown target {target!r}; valid targets: {', '.join(TARGETS)}")
    return TARGET_INFO[target]


def precisions(target: str) -> tuple[str, ...]:
    """Float precisions `target` supports here, default first."""
    info = target_info(target)
    return (info.default_precision, *(p for p in info.precisions if p != info.default_precision))


def resolve_targets(text: str) -> tuple[str, ...]:
    """`all`, one target, or a comma-separated list of them (e.g. `onnx,tflite`), in the canonical order."""
    if text == "all":
        return TARGETS
    wanted = [t.strip() for t in text.split(",")]
    unknown = [t for t in wanted if t not in TARGET_INFO]
    if unknown:
        raise ConversionError(f"unknown target {unknown[0]!r}; valid targets: {', '.join(TARGETS)}, all (or a list)")
    return tuple(t for t in TARGETS if t in wanted)


def held_bits(target: str) -> str:
    """What `target`'s quantized artifacts hold, in words, for error messages and the manifest."""
    info = target_info(target)
    weights = "/".join(str(b) for b in info.weight_bits)
    return f"{weights}-bit weights and {'/'.join(str(b) for b in info.act_bits)}-bit activations"
