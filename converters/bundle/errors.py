"""What a bundle problem looks like: one line, naming the JSON path, with manifest text escaped.

A bundle is untrusted input (a file from elsewhere): its text must never move the cursor or add lines to a
terminal, so every value quoted from it goes through `safe_text`.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_SHOWN_CHARS = 120


class BundleError(ValueError):
    """A bundle, its manifest or an output folder is not what it must be; the message names the problem and
    the fix in one line (the edgevit CLI prints it and exits 2)."""


def safe_text(value: Any, limit: int = _SHOWN_CHARS) -> str:
    """`value` as one printable line: control and format characters (ANSI escapes, newlines, bidi overrides)
    become visible `\\x..` escapes and long text is cut, so a manifest cannot move the cursor or add lines."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    return "".join(
        (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")
        else c
        for c in text
    )


def quoted(value: Any) -> str:
    """Manifest text inside a message: quoted, escaped, cut."""
    return f"'{safe_text(value)}'" if isinstance(value, str) else safe_text(value)


class Label(str):
    """A JSON path segment written as it is, e.g. `artifacts[image_encoder/onnx]` when the index is unknown."""


def json_path(parts: Iterable[str | int]) -> str:
    """`artifacts[2].sha256` from ("artifacts", 2, "sha256"); odd keys are quoted."""
    out = ""
    for part in parts:
        if isinstance(part, Label):
            out += part
        elif isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier():
            out += f".{part}" if out else part
        else:
            out += f"[{safe_text(json.dumps(part))}]"
    return out or "(top level)"


def problem(where: Path | str, path: Iterable[str | int], text: str) -> BundleError:
    """The error for `text` found at JSON `path` of the manifest file `where`."""
    return BundleError(f"{safe_text(str(where), 300)}: {json_path(path)}: {text}")
