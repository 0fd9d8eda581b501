"""A per-host cache of still-image jobs in SQLite: the tiles this viewer collected, and the
results it assembled, so a result is built once per host and served without rebuilding it.

Only a cache: what a job is and how it stands is in the job-state topic (viewer/stills/joblog.py),
and the tiles are in the job results topic. A replica with an empty cache (another host, a
deleted file) collects a job's tiles again from where the job-state topic says they sit. Workers of
one host may share the file (``JOBS_DB``): a claim in the job's row lets only one assemble.
Tiles are deleted once the assembled job is published; only the newest ``keep`` finished jobs (and at most
``max_result_bytes`` of results) are kept.
"""
from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from viewer.stills.offload import native_lock, off_hub_method

ACTIVE = ("queued", "running")
# Assembling a 50 MP image takes seconds: a claim this old belongs to a viewer that died.
ASSEMBLY_LEASE_S = 120.0

DEFAULT_DB = os.path.join(tempfile.gettempdir(), "kafka-live-video", "jobs.sqlite3")

# Bump when _SCHEMA changes. Job state is short-lived (results are downloaded within minutes),
# so a store written by another schema version is dropped and recreated, not migrated.
SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    format TEXT NOT NULL,
    transform TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    tiles_total INTEGER NOT NULL,
    tiles_done INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    finished REAL,
    error TEXT,
    out_width INTEGER,
    out_height INTEGER,
    claimed REAL,
    result BLOB,
    result_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tiles (
    job TEXT NOT NULL,
    idx INTEGER NOT NULL,
    header TEXT,
    data BLOB NOT NULL,
    PRIMARY KEY (job, idx)
);
"""


@dataclass(frozen=True)
class JobStatus:
    id: str
    state: str
    format: str
    transform: str
    width: int
    height: int
    tiles_total: int
    tiles_done: int
    created: float
    finished: float | None
    error: str | None
    out_width: int | None
    out_height: int | None
    result_bytes: int

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.time()) - self.created

    def to_json(self) -> dict:
        return {
            "job": self.id, "state": self.state, "format": self.format, "transform": self.transform,
            "width": self.width, "height": self.height,
            "out_width": self.out_width, "out_height": self.out_height,
            "tiles_done": self.tiles_done, "tiles_total": self.tiles_total,
            "elapsed_s": round(self.elapsed_s, 3), "error": self.error,
        }


_STATUS_COLUMNS = ", ".join(JobStatus.__dataclass_fields__)


class JobStore:
    """Every method opens its own short connection, so any thread (or worker) may call it.
    Under gevent each runs on a native thread (viewer.stills.offload): commits of megabyte tiles and
    results, and the WAL checkpoints they trigger, never block the live streams."""

    def __init__(self, path: str = DEFAULT_DB, keep: int = 50, max_result_bytes: int = 1 << 30) -> None:
        self.path = path
        self.keep = keep
        self.max_result_bytes = max_result_bytes
        # Serialises this process's writers; other processes wait on SQLite's own lock. Every
        # method runs off the gevent hub (see below), so the lock is the OS's.
        self._write_lock = native_lock()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._enable_wal()
        with self._write() as db:  # one writer: workers starting together do not drop each other's tables
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                for table in ("jobs", "tiles", "cursor"):
                    db.execute(f"DROP TABLE IF EXISTS {table}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            # Tiles of finished jobs left by a viewer that stopped between finish() and drop_tiles().
            db.execute("DELETE FROM tiles WHERE job NOT IN (SELECT id FROM jobs WHERE state IN ('queued', 'running'))")

    def _enable_wal(self, timeout_s: float = 30.0) -> None:
        """Switch the file to WAL. Connections switching it at once may fail at once with "database
        is locked": each holds a read lock while it asks for the exclusive one, so SQLite answers
        without waiting (no busy handler can resolve that), and the loser retries."""
        deadline = time.monotonic() + timeout_s
        while True:
            db = self._open()
            try:
                db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            finally:
                db.close()
            time.sleep(0.05)

    def _open(self, **options) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, **options)
        # WAL with NORMAL: commits survive a crash of the viewer without an fsync each, which
        # would block every greenlet of a gevent worker (a job writes one row per tile).
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = self._open()
        try:
            with db:  # one transaction: commit on success, roll back on error
                yield db
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds SQLite's write lock from its first statement, so a
        read-then-write (is the job still running? then store the tile) is atomic across the
        viewer workers sharing the file."""
        with self._write_lock:
            db = self._open(isolation_level=None)
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            finally:
                db.close()

    @off_hub_method
    def ensure(self, job_id: str, fmt: str, transform: str, width: int, height: int, tiles_total: int,
               created: float) -> None:
        """Start caching a job (known from the job-state topic) unless it already is."""
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO jobs (id, state, format, transform, width, height, tiles_total, created)"
                " VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
                (job_id, fmt, transform, width, height, tiles_total, created),
            )

    @off_hub_method
    def get(self, job_id: str) -> JobStatus | None:
        with self._connect() as db:
            return self._status(db, job_id)

    @staticmethod
    def _status(db: sqlite3.Connection, job_id: str) -> JobStatus | None:
        row = db.execute(f"SELECT {_STATUS_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else JobStatus(*row)

    def add_tile(self, job_id: str, index: int, header: str | None, data: bytes, out_width: int, out_height: int
                 ) -> JobStatus | None:
        """``add_tiles`` for one tile."""
        return self.add_tiles(job_id, [(index, header, data)], out_width, out_height)

    @off_hub_method
    def add_tiles(self, job_id: str, tiles: list[tuple[int, str | None, bytes]], out_width: int, out_height: int
                  ) -> JobStatus | None:
        """Store processed tiles (index, header, data) of one job (duplicates ignored) and the
        output size they carry, in one transaction; the job's status after them, None if the
        job is unknown or already finished (redelivered tiles of an old job).

        One transaction for all the tiles one poll brought: a transaction per tile (with its
        own connection, and another for the status) made the viewer fall behind two processors
        (blur on a 4096² image: its last tile stored 0.7 s after the processors' last one)."""
        with self._write() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row[0] not in ACTIVE:
                return None
            db.executemany("INSERT OR IGNORE INTO tiles (job, idx, header, data) VALUES (?, ?, ?, ?)",
                           [(job_id, index, header, data) for index, header, data in tiles])
            db.execute("UPDATE jobs SET state = 'running', out_width = ?, out_height = ?,"
                       " tiles_done = (SELECT count(*) FROM tiles WHERE job = ?)"
                       " WHERE id = ? AND state IN ('queued', 'running')",
                       (out_width, out_height, job_id, job_id))
            return self._status(db, job_id)

    @off_hub_method
    def claim_assembly(self, job_id: str, lease_s: float = ASSEMBLY_LEASE_S) -> bool:
        """True for the one caller (of every viewer worker sharing this file) that should
        assemble this complete job now; a claim older than ``lease_s`` is presumed dead."""
        now = time.time()
        with self._write() as db:
            claimed = db.execute(
                "UPDATE jobs SET claimed = ? WHERE id = ? AND state = 'running' AND tiles_done >= tiles_total"
                " AND (claimed IS NULL OR claimed < ?)", (now, job_id, now - lease_s)).rowcount
        return claimed == 1

    @off_hub_method
    def complete_unassembled(self) -> list[str]:
        """Jobs whose every tile is stored but that have no result: a viewer stopped mid-way."""
        with self._connect() as db:
            return [row[0] for row in db.execute(
                "SELECT id FROM jobs WHERE state = 'running' AND tiles_done >= tiles_total ORDER BY created")]

    @off_hub_method
    def tiles(self, job_id: str) -> list[tuple[str | None, bytes]]:
        with self._connect() as db:
            return db.execute("SELECT header, data FROM tiles WHERE job = ? ORDER BY idx", (job_id,)).fetchall()

    @off_hub_method
    def finish(self, job_id: str, result: bytes) -> None:
        """Store the result; the job's tiles stay until ``drop_tiles``, so that deleting them
        (tens of MB for a large image: 0.1-1.3 s measured) does not delay the job's end."""
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET state = 'done', finished = ?, result = ?, result_bytes = ?"
                " WHERE id = ? AND state IN ('queued', 'running')",
                (time.time(), result, len(result), job_id),
            )
            self._prune(db)

    @off_hub_method
    def drop_tiles(self, job_id: str) -> None:
        """Delete a finished job's tiles (not those of a job still in progress)."""
        with self._write() as db:
            db.execute("DELETE FROM tiles WHERE job = ? AND job NOT IN"
                       " (SELECT id FROM jobs WHERE state IN ('queued', 'running'))", (job_id,))

    @off_hub_method
    def fail(self, job_id: str, error: str) -> None:
        with self._write() as db:
            self._fail(db, job_id, error)
            self._prune(db)

    @off_hub_method
    def expire(self, max_age_s: float) -> None:
        """Evict every unassembled job older than ``max_age_s`` and its tiles: the cache's bulk.
        The job-state topic still knows the job; a result asked for later is collected again."""
        with self._write() as db:
            stale = db.execute("SELECT id FROM jobs WHERE state IN ('queued', 'running') AND created < ?",
                               (time.time() - max_age_s,)).fetchall()
            for (job_id,) in stale:
                db.execute("DELETE FROM tiles WHERE job = ?", (job_id,))
                db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    @staticmethod
    def _fail(db: sqlite3.Connection, job_id: str, error: str) -> None:
        db.execute("UPDATE jobs SET state = 'failed', finished = ?, error = ? WHERE id = ? AND state IN"
                   " ('queued', 'running')", (time.time(), error, job_id))
        db.execute("DELETE FROM tiles WHERE job = ?", (job_id,))

    @off_hub_method
    def result(self, job_id: str) -> bytes | None:
        with self._connect() as db:
            row = db.execute("SELECT result FROM jobs WHERE id = ? AND state = 'done'", (job_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def _prune(self, db: sqlite3.Connection) -> None:
        """Drop the oldest finished jobs beyond ``keep`` or beyond ``max_result_bytes`` of results."""
        finished = db.execute("SELECT id, result_bytes FROM jobs WHERE state IN ('done', 'failed')"
                              " ORDER BY finished DESC").fetchall()
        kept_bytes = 0
        for rank, (job_id, size) in enumerate(finished):
            kept_bytes += size
            if rank > 0 and (rank >= self.keep or kept_bytes > self.max_result_bytes):
                db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
