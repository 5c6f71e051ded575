"""Lowering of one deploy unit to one target; backends are imported lazily inside their target's package."""

from converters.artifact import Artifact, OutputParity, TensorSpec
from converters.base import convert
from converters.errors import ConversionError, RuntimeUnavailableError
from converters.parity import MIN_SQNR_DB, check_parity, max_abs_diff, sqnr_db
from converters.runtime import Runner, load_runner
from converters.targets.registry import TARGET_INFO, TARGETS, TargetInfo, precisions, resolve_targets, target_info
from converters.unit import DeployUnit

__all__ = [
    "MIN_SQNR_DB",
    "TARGETS",
    "TARGET_INFO",
    "Artifact",
    "ConversionError",
    "DeployUnit",
    "OutputParity",
    "Runner",
    "RuntimeUnavailableError",
    "TargetInfo",
    "TensorSpec",
    "check_parity",
    "convert",
    "load_runner",
    "max_abs_diff",
    "precisions",
    "resolve_targets",
    "sqnr_db",
    "target_info",
]
