"""The farm's user errors: one line naming the problem and the fix (the CLI prints it and exits 2)."""

from __future__ import annotations


class FarmError(ValueError):
    """A farm file, a results database or a cluster address that cannot be used."""


def one_line(exc: BaseException, limit: int = 400) -> str:
    """An exception as the single line a job's record keeps, prefixed by its type when that is a bare builtin
    (a KeyError's message alone says little) or the message is empty; the devices' errors speak for themselves."""
    text = " ".join(str(exc).split())
    if not text or (type(exc).__module__ == "builtins" and not isinstance(exc, OSError | ValueError)):
        text = f"{type(exc).__name__}: {text}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 1] + "…"
