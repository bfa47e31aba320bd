"""What the engine keeps across restarts: events, alerts, the audit trail and small state.

One SQLite file (``DIR/engine.db``, WAL, mode 0600). Events have increasing ids that are
never reused (``AUTOINCREMENT``), so a client that resumes after the last id it saw gets
exactly what it missed; they are kept up to a count and an age, and a client that asks for
more than was kept learns how many it lost. A committed row survives the engine being
killed. Every method is short and thread-safe (one connection behind a lock).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

DB_FILE: Final = "engine.db"
MAX_EVENTS: Final = 50_000
EVENT_MAX_AGE: Final = 30 * 86_400.0
MAX_AUDIT: Final = 100_000

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, type TEXT NOT NULL,
    data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY, detected_at REAL NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts (detected_at);
CREATE INDEX IF NOT EXISTS alerts_by_state ON alerts (json_extract(data, '$.state'));
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, data TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Event:
    """One event of the stream."""

    id: int
    at: float
    type: str
    data: dict[str, Any]

    def as_message(self) -> dict[str, Any]:
        """What the event stream sends."""
        return {"id": self.id, "at": self.at, "type": self.type, "data": self.data}


class Store:
    """The engine's database (see the module docstring)."""

    def __init__(
        self, folder: Path, *, max_events: int = MAX_EVENTS, event_max_age: float = EVENT_MAX_AGE
    ) -> None:
        self.path = folder / DB_FILE
        self.max_events = max_events
        self.event_max_age = event_max_age
        folder.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        if fresh:
            os.chmod(self.path, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        if self.get_meta("epoch") is None:
            self.set_meta("epoch", uuid.uuid4().hex)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ----------------------------------------------------------------------- meta

    def get_meta(self, key: str) -> Any:
        """A small persisted value (decoded JSON), or None."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        """Persist a small value (JSON-encodable)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )

    @property
    def epoch(self) -> str:
        """Changes when the database is made anew: a client's old ids mean nothing then."""
        return str(self.get_meta("epoch"))

    # ----------------------------------------------------------------------- events

    def append(self, event_type: str, data: dict[str, Any], at: float | None = None) -> Event:
        """Persist an event; it is committed when this returns."""
        when = time.time() if at is None else at
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO events (at, type, data) VALUES (?, ?, ?)",
                (when, event_type, json.dumps(data)),
            )
            event_id = int(cursor.lastrowid or 0)
        return Event(event_id, when, event_type, data)

    def events_after(self, after: int, limit: int = 1000) -> list[Event]:
        """Events with an id above ``after``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, at, type, data FROM events WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit),
            ).fetchall()
        return [Event(row[0], row[1], row[2], json.loads(row[3])) for row in rows]

    def event_bounds(self) -> tuple[int, int]:
        """(first kept id, last id ever given); (0, last) when none is kept."""
        with self._lock:
            first, last_kept = self._db.execute("SELECT MIN(id), MAX(id) FROM events").fetchone()
            row = self._db.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
            ).fetchone()
        last = int(row[0]) if row else 0
        return (int(first) if first is not None else 0, max(last, int(last_kept or 0)))

    def prune_events(self, now: float | None = None) -> int:
        """Drop events beyond the count and age bounds; how many went."""
        cutoff = (time.time() if now is None else now) - self.event_max_age
        with self._tx() as db:
            dropped = db.execute("DELETE FROM events WHERE at < ?", (cutoff,)).rowcount
            dropped += db.execute(
                "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?",
                (self.max_events,),
            ).rowcount
        return int(dropped)

    # ----------------------------------------------------------------------- alerts

    def put_alert(self, alert: dict[str, Any]) -> None:
        """Insert or replace an alert record (``id`` and ``detected_at`` required)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO alerts (id, detected_at, data) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET data = excluded.data",
                (alert["id"], float(alert["detected_at_ts"]), json.dumps(alert)),
            )

    def alert(self, alert_id: str) -> dict[str, Any] | None:
        """One alert record."""
        with self._lock:
            row = self._db.execute("SELECT data FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def alerts(self, *, limit: int = 100, since: float | None = None) -> list[dict[str, Any]]:
        """The newest alerts first (detected at ``since`` or later when given)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM alerts WHERE detected_at >= ? ORDER BY detected_at DESC LIMIT ?",
                (since if since is not None else 0.0, limit),
            ).fetchall()
        return [dict(json.loads(row[0])) for row in rows]

    def alerts_in_state(self, state: str, limit: int = 10_000) -> list[dict[str, Any]]:
        """The alerts in a state (``pending``...), newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM alerts WHERE json_extract(data, '$.state') = ? "
                "ORDER BY detected_at DESC LIMIT ?",
                (state, limit),
            ).fetchall()
        return [dict(json.loads(row[0])) for row in rows]

    def count_alerts(self, state: str) -> int:
        """How many alerts are in a state (``pending``...)."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM alerts WHERE json_extract(data, '$.state') = ?", (state,)
            ).fetchone()
        return int(row[0])

    def expire_alerts(self, before: float) -> list[str]:
        """Drop alerts detected before ``before``; their ids (to delete their images)."""
        with self._tx() as db:
            ids = [
                row[0]
                for row in db.execute(
                    "SELECT id FROM alerts WHERE detected_at < ?", (before,)
                ).fetchall()
            ]
            db.execute("DELETE FROM alerts WHERE detected_at < ?", (before,))
            db.execute("DELETE FROM audit WHERE at < ?", (before,))
            db.execute(
                "DELETE FROM audit WHERE id <= (SELECT MAX(id) FROM audit) - ?", (MAX_AUDIT,)
            )
        return ids

    # ----------------------------------------------------------------------- audit

    def audit(self, entry: dict[str, Any]) -> None:
        """Add a line to the audit trail (``at`` in seconds since the epoch)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO audit (at, data) VALUES (?, ?)",
                (float(entry["at"]), json.dumps(entry)),
            )

    def audit_since(self, since: float | None = None, limit: int = 10_000) -> list[dict[str, Any]]:
        """The audit trail, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM audit WHERE at >= ? ORDER BY id LIMIT ?",
                (since if since is not None else 0.0, limit),
            ).fetchall()
        return [dict(json.loads(row[0])) for row in rows]
