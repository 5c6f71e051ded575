"""The farm's results database (SQLite, WAL): one row per bundle × device job, written as each result arrives.

A row's status is queued → running → done | failed. `attempts` counts the tries started (so a resumed run that
re-runs nothing leaves it as it was), `failures` the tries that failed (what the retry budget is spent on). A
result is committed the moment it comes back (WAL, synchronous=FULL), so a run killed with SIGKILL loses at most
the job it was running: the next run finds that row "running", puts it back in the queue and keeps every "done" row.

The file says what it is (`application_id`) and which schema wrote it (`user_version`): a database from a newer
edgevit is refused in one line rather than misread. One run at a time holds `.NAME.lock` beside it (fcntl);
`status` and `export` only read and need no lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.farm.errors import FarmError

APPLICATION_ID = 0x45564652  # "EVFR": an edgevit farm database
SCHEMA_VERSION = 1
STATUSES = ("queued", "running", "done", "failed")

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    bundle TEXT NOT NULL,           -- absolute path of the bundle folder
    manifest_sha256 TEXT NOT NULL,  -- a rebuilt bundle at the same path is a new job
    device TEXT NOT NULL,           -- the device's name in farm.toml
    spec TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    error TEXT,                     -- the last failure, one line
    host TEXT,                      -- where the last try ran
    results TEXT,                   -- the `edgevit.bench` results JSON of a done job
    updated TEXT NOT NULL,
    UNIQUE (bundle, manifest_sha256, device, spec)
);
"""


@dataclass(frozen=True)
class Job:
    id: int
    bundle: str
    manifest_sha256: str
    device: str
    spec: str
    status: str
    attempts: int
    failures: int
    error: str | None
    host: str | None
    results: dict[str, Any] | None
    updated: str

    def summary(self) -> dict[str, Any]:
        """The row without its results (what `farm status --json` prints)."""
        return {k: v for k, v in self.__dict__.items() if k != "results"}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Store:
    """A farm database, opened (and created when `create`) and checked; thread-safe (one connection, a lock)."""

    def __init__(self, path: Path, create: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists() and not create:
            raise FarmError(f"{self.path} does not exist; it is written by `edgevit farm run ... --db {self.path}`")
        self.lock = threading.Lock()
        try:
            self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._check_schema(create)
        except sqlite3.DatabaseError as exc:
            raise FarmError(
                f"{self.path} is not a farm database ({exc}); pass one written by `edgevit farm run`"
            ) from None

    def _check_schema(self, create: bool) -> None:
        app = self.db.execute("PRAGMA application_id").fetchone()[0]
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        empty = self.db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        if empty and app == 0 and create:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(
                f"BEGIN; {SCHEMA} PRAGMA application_id={APPLICATION_ID}; PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
            )
        elif app != APPLICATION_ID:
            raise FarmError(f"{self.path} is not a farm database; pass one written by `edgevit farm run`")
        elif version > SCHEMA_VERSION:
            raise FarmError(
                f"{self.path} is from a newer farm schema (version {version}, this edgevit reads up to "
                f"{SCHEMA_VERSION}); upgrade edgevit to read it"
            )
        self.db.execute("PRAGMA synchronous=FULL")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.lock:
            if self.db.in_transaction:
                yield
                return
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Record the bench settings of the first run; a later run with other settings would mix results."""
        text = json.dumps(settings, sort_keys=True)
        with self.transaction():
            row = self.db.execute("SELECT value FROM meta WHERE key = 'settings'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO meta VALUES ('settings', ?)", (text,))
            elif row[0] != text:
                raise FarmError(
                    f"{self.path} holds results benched with other settings ({row[0]}); use another --db "
                    "or the same [bench] settings"
                )

    def add_jobs(self, pairs: list[tuple[str, str, str, str]]) -> list[int]:
        """The ids of (bundle, manifest_sha256, device, spec) jobs, created queued where new."""
        ids = []
        with self.transaction():
            for key in pairs:
                self.db.execute(
                    "INSERT OR IGNORE INTO jobs (bundle, manifest_sha256, device, spec, status, updated) "
                    "VALUES (?, ?, ?, ?, 'queued', ?)",
                    (*key, now()),
                )
                where = "bundle = ? AND manifest_sha256 = ? AND device = ? AND spec = ?"
                ids.append(self.db.execute(f"SELECT id FROM jobs WHERE {where}", key).fetchone()[0])
        return ids

    def requeue(self, ids: list[int]) -> int:
        """Put the unfinished jobs among `ids` back in the queue: "running" ones (their run was killed) and
        "failed" ones (a recorded failure is resumable: the next run gives it a fresh retry budget)."""
        marks = ",".join("?" * len(ids))
        with self.transaction():
            cur = self.db.execute(
                f"UPDATE jobs SET status = 'queued', failures = 0, updated = ? "
                f"WHERE id IN ({marks}) AND status IN ('running', 'failed')",
                (now(), *ids),
            )
        return cur.rowcount

    def start(self, job_id: int, host: str | None = None) -> None:
        with self.transaction():
            self.db.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, host = ?, updated = ? WHERE id = ?",
                (host, now(), job_id),
            )

    def done(self, job_id: int, results: dict[str, Any], host: str | None = None) -> None:
        with self.transaction():
            self.db.execute(
                "UPDATE jobs SET status = 'done', results = ?, error = NULL, host = coalesce(?, host), updated = ? "
                "WHERE id = ?",
                (json.dumps(results, allow_nan=False), host, now(), job_id),
            )

    def failure(self, job_id: int, error: str, final: bool) -> None:
        """One failed try: back to the queue, or recorded failed when it was the last one."""
        with self.transaction():
            self.db.execute(
                "UPDATE jobs SET status = ?, failures = failures + 1, error = ?, updated = ? WHERE id = ?",
                ("failed" if final else "queued", error, now(), job_id),
            )

    def give_up(self, job_id: int, error: str) -> None:
        """Record a job failed without trying it (its device is down)."""
        with self.transaction():
            self.db.execute(
                "UPDATE jobs SET status = 'failed', error = ?, updated = ? WHERE id = ?", (error, now(), job_id)
            )

    def jobs(self, ids: list[int] | None = None) -> list[Job]:
        with self.lock:
            rows = self.db.execute(f"SELECT {', '.join(Job.__dataclass_fields__)} FROM jobs ORDER BY id").fetchall()
        jobs = [Job(*row[:10], json.loads(row[10]) if row[10] else None, row[11]) for row in rows]
        return jobs if ids is None else [j for j in jobs if j.id in set(ids)]

    def job(self, job_id: int) -> Job:
        return self.jobs([job_id])[0]


@contextmanager
def run_lock(db: Path) -> Iterator[None]:
    """One `farm run` per database: a second one on the same file would run every job twice."""
    path = db.with_name(f".{db.name}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FarmError(f"another `edgevit farm run` is using {db}; wait for it or use another --db") from None
        yield
    finally:
        os.close(fd)
