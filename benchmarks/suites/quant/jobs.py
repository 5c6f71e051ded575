"""A step of a section and the row it yields; a method failing on a model is a row, not a crash."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def one_line(exc: BaseException) -> str:
    """The exception as one line of at most 300 characters, its type first: a row's error, a console line."""
    text = " ".join(str(exc).split()) or "(no message)"
    text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 300 else text[:297] + "..."


class Unsupported(Exception):
    """A method or target cannot express the requested bits; the message says what it can."""


@dataclass
class Job:
    """One step of a section: `run` returns rows; if it raises, the row `base` with the error is recorded."""

    label: str
    base: dict[str, Any]
    run: Callable[[], list[dict[str, Any]]]


def row(base: dict[str, Any], **values: Any) -> dict[str, Any]:
    return {"status": "ok", **base, **values}


def timed(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    start = time.perf_counter()
    out = fn()
    return {**out, "seconds": round(time.perf_counter() - start, 2)}


def run_job(job: Job) -> list[dict[str, Any]]:
    """The job's rows, or one row with its error: a method failing on a model is a result, not a crash."""
    try:
        return job.run()
    except Unsupported as exc:
        return [{**job.base, "status": "unsupported", "note": " ".join(str(exc).split())}]
    except Exception as exc:
        return [{**job.base, "status": "failed", "error": one_line(exc)}]
