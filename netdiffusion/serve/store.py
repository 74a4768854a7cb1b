"""Job state in SQLite under the state directory, so jobs survive a restart of the service.

The API process and the job processes both write here (WAL mode, short transactions). On
start-up, jobs that were running when the service stopped are marked failed with that reason;
jobs that were still queued are queued again.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

QUEUED, RUNNING, SUCCEEDED, FAILED, SUBMITTED = "queued", "running", "succeeded", "failed", "submitted"
CANCELLED = "cancelled"
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, SUBMITTED, CANCELLED)
CANCELLABLE = (QUEUED, RUNNING, SUBMITTED)
CANCEL_REASON = "cancelled by its owner"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    token_id TEXT NOT NULL,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    flows INTEGER NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    stage TEXT NOT NULL DEFAULT '',
    error TEXT,
    result TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    owner TEXT,
    heartbeat REAL,
    expired REAL
);
CREATE INDEX IF NOT EXISTS jobs_token_created ON jobs (token_id, created);
"""

RESTART_REASON = "interrupted: the service restarted while the job was running; submit it again"
LOST_REASON = ("lost: no heartbeat from the job for {stale:g} s (the service replica running it stopped); "
               "submit it again")
HEARTBEAT_S = 5.0  # job processes touch their row this often
STALE_S = 60.0  # a running job silent for this long is failed by any replica


class JobStore:
    """Thread-safe access to the jobs table (one connection per thread)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(_SCHEMA)  # executescript manages its own transaction
        columns = {r[1] for r in self._conn().execute("PRAGMA table_info(jobs)")}
        for column in ("owner TEXT", "heartbeat REAL", "expired REAL"):  # databases from before these columns
            if column.split()[0] not in columns:
                self._conn().execute(f"ALTER TABLE jobs ADD COLUMN {column}")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def create(self, token_id: str, request: dict[str, Any], flows: int, status: str = QUEUED) -> str:
        job_id = uuid.uuid4().hex
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs (id, token_id, status, request, flows, created) VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, token_id, status, json.dumps(request), flows, time.time()),
            )
        return job_id

    def create_within_quota(self, token_id: str, request: dict[str, Any], flows: int, *, window_s: float,
                            max_jobs: int, max_flows: int) -> tuple[str | None, str | None]:
        """Check the token's quota and create the job in one transaction, so that concurrent
        requests cannot both slip under the limit. Returns (job id, None) or (None, reason)."""
        since = time.time() - window_s
        with self._tx() as db:
            jobs, used = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(flows), 0) FROM jobs WHERE token_id = ? AND created >= ?",
                (token_id, since),
            ).fetchone()
            if jobs + 1 > max_jobs:
                return None, f"job quota exceeded: {jobs} of {max_jobs} jobs used in the last {window_s:g} s"
            if used + flows > max_flows:
                return None, (f"flow quota exceeded: {used} of {max_flows} flows used in the last "
                              f"{window_s:g} s, this request asks for {flows}")
            job_id = uuid.uuid4().hex
            db.execute(
                "INSERT INTO jobs (id, token_id, status, request, flows, created) VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, token_id, QUEUED, json.dumps(request), flows, time.time()),
            )
        return job_id, None

    def get(self, job_id: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _row(row) if row else None

    def list(self, token_id: str, limit: int = 50) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT * FROM jobs WHERE token_id = ? ORDER BY created DESC LIMIT ?", (token_id, limit)
        ).fetchall()
        return [_row(r) for r in rows]

    def by_status(self, status: str, limit: int = 500) -> list[dict[str, Any]]:
        rows = self._conn().execute("SELECT * FROM jobs WHERE status = ? ORDER BY created LIMIT ?",
                                    (status, limit)).fetchall()
        return [_row(r) for r in rows]

    def update(self, job_id: str, **changes: Any) -> None:
        self._update(job_id, changes)

    def _update(self, job_id: str, changes: dict[str, Any], only_from: tuple[str, ...] = ()) -> bool:
        """Set ``changes`` on the job (only while its status is one of ``only_from``, if given);
        True if the row changed."""
        if "result" in changes and not isinstance(changes["result"], str | None):
            changes = {**changes, "result": json.dumps(changes["result"])}
        cols = ", ".join(f"{k} = ?" for k in changes)
        where = f" AND status IN ({', '.join('?' * len(only_from))})" if only_from else ""
        with self._tx() as db:
            cur = db.execute(f"UPDATE jobs SET {cols} WHERE id = ?{where}", (*changes.values(), job_id, *only_from))
        return cur.rowcount == 1

    def claim(self, job_id: str, owner: str = "") -> bool:
        """queued → running by ``owner`` (the replica's host name); False if it is no longer queued
        (another replica that re-queued it after a restart got it first)."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET status = ?, started = ?, owner = ?, heartbeat = ? "
                             "WHERE id = ? AND status = ?", (RUNNING, now, owner, now, job_id, QUEUED))
        return cur.rowcount == 1

    def beat(self, job_id: str) -> bool:
        """Touch a running job's heartbeat; False when it is no longer running (cancelled, or failed
        by another replica), which tells its process to stop."""
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET heartbeat = ? WHERE id = ? AND status = ?",
                             (time.time(), job_id, RUNNING))
        return cur.rowcount == 1

    def status(self, job_id: str) -> str | None:
        row = self._conn().execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row[0] if row else None

    def finish(self, job_id: str, status: str, *, error: str | None = None, result: Any = None) -> bool:
        """Record the outcome; a cancelled job keeps that status (its process may finish or fail
        after the cancel). False if the job was cancelled."""
        changes: dict[str, Any] = {"status": status, "finished": time.time(), "error": error}
        if status == SUCCEEDED:
            changes["progress"] = 1.0
            changes["stage"] = "done"
        if result is not None:
            changes["result"] = result
        return self._update(job_id, changes, only_from=tuple(s for s in STATUSES if s != CANCELLED))

    def mark_submitted(self, job_id: str, run: dict[str, Any]) -> bool:
        """running → submitted with the KFP run; False if the job was cancelled while submitting."""
        return self._update(job_id, {"status": SUBMITTED, "stage": "pipeline run submitted", "result": run},
                            only_from=(RUNNING,))

    def cancel(self, job_id: str) -> str | None:
        """A queued, running or submitted job → cancelled; returns the status it had, or None if it
        had already ended (then nothing changes)."""
        with self._tx() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row[0] not in CANCELLABLE:
                return None
            db.execute("UPDATE jobs SET status = ?, error = ?, stage = ?, finished = ? WHERE id = ?",
                       (CANCELLED, CANCEL_REASON, "cancelled", time.time(), job_id))
        return row[0]

    def ended_before(self, before: float, limit: int = 500) -> list[str]:
        """Ended jobs that finished before ``before`` and whose stored result is not yet removed."""
        rows = self._conn().execute(
            f"SELECT id FROM jobs WHERE status IN ({', '.join('?' * len(TERMINAL))}) AND finished < ? "
            "AND expired IS NULL ORDER BY finished LIMIT ?", (*TERMINAL, before, limit)).fetchall()
        return [r[0] for r in rows]

    def recover(self, owner: str = "", stale_s: float = STALE_S) -> tuple[int, list[str]]:
        """After a restart: this host's running jobs (and any whose heartbeat went stale) → failed
        with the reason; queued jobs → returned for re-queueing (claim() keeps them single-run).

        Jobs running on other live replicas sharing the database keep beating and are left alone."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET status = ?, error = ?, finished = ? WHERE status = ? "
                "AND (owner = ? OR owner IS NULL OR COALESCE(heartbeat, started, created) < ?)",
                (FAILED, RESTART_REASON, now, RUNNING, owner, now - stale_s))
            failed = cur.rowcount
            queued = [r[0] for r in db.execute(
                "SELECT id FROM jobs WHERE status = ? ORDER BY created", (QUEUED,)).fetchall()]
        return failed, queued

    def fail_stale(self, stale_s: float = STALE_S) -> int:
        """Running jobs whose process stopped beating (its replica died) → failed, with the reason."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET status = ?, error = ?, finished = ? WHERE status = ? "
                "AND COALESCE(heartbeat, started, created) < ?",
                (FAILED, LOST_REASON.format(stale=stale_s), now, RUNNING, now - stale_s))
        return cur.rowcount

    def counts(self) -> dict[str, int]:
        rows = self._conn().execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        out = dict.fromkeys(STATUSES, 0)
        out.update({r[0]: r[1] for r in rows})
        return out

    def writable(self) -> bool:
        try:
            with self._tx() as db:
                db.execute("SELECT 1")
            return True
        except sqlite3.Error:
            return False


def _row(row: sqlite3.Row) -> dict[str, Any]:
    job = dict(row)
    job["request"] = json.loads(job["request"])
    job["result"] = json.loads(job["result"]) if job.get("result") else None
    return job
