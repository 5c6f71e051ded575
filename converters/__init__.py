"""Lowering of one deploy unit to one target; backends are imported lazily inside their module."""

from converters.artifact import Artifact, OutputParity, TensorSpec
from converters.base import TARGETS, ConversionError, convert, precisions
from converters.parity import MIN_SQNR_DB, check_parity, max_abs_diff, sqnr_db
from converters.runtime import Runner, RuntimeUnavailableError, load_runner
from converters.unit import DeployUnit

__all__ = [
    "MIN_SQNR_DB",
    "TARGETS",
    "Artifact",
    "ConversionError",
    "DeployUnit",
    "OutputParity",
    "Runner",
    "RuntimeUnavailableError",
    "TensorSpec",
    "check_parity",
    "convert",
    "load_runner",
    "max_abs_diff",
    "precisions",
    "sqnr_db",
]
