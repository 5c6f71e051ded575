"""Lowering of one deploy unit to one target; backends are imported lazily inside their module."""

from converters.unit import DeployUnit

__all__ = ["DeployUnit"]
