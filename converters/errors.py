"""The two failures every part of `converters` may raise, in a leaf module so that any module can raise them."""

from __future__ import annotations


class ConversionError(Exception):
    """A conversion, validation or parity failure, with a one-line message fit for a CLI."""


class RuntimeUnavailableError(RuntimeError):
    """The artifact is valid but this machine has no runtime that can execute it (e.g. Core ML off macOS)."""
