"""A durable home for an orchestrator's winning tickets (the redemption queue's store) in SQLite.

Storage knows nothing of payments: a row is a ticket hash, a state name and an opaque record
blob that the node encodes and decodes. Rows keep their insertion order; every write is one
transaction with synchronous=FULL, so a call returns only once its change is durable."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from storage.errors import StorageError, StoreCorrupt

TICKETS_DB = "tickets.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tickets (
    pos         INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_hash BLOB NOT NULL UNIQUE,
    state       TEXT NOT NULL,
    record      BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS tickets_by_state ON tickets (state, pos);
"""


class TicketRows:
    """Rows of `(ticket_hash, state, record)`; thread-safe (one connection behind a lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupt(f"{self.path}: not a ticket store: {exc}") from None
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot open: {exc}") from None
        self._lock = threading.Lock()

    @classmethod
    def open_dir(cls, data_dir: str | Path) -> TicketRows:
        return cls(Path(data_dir) / TICKETS_DB)

    def add(self, ticket_hash: bytes, state: str, record: bytes) -> bool:
        """Insert unless the hash is stored; True if inserted."""
        _check(ticket_hash, state)
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO tickets (ticket_hash, state, record) VALUES (?, ?, ?)",
                (ticket_hash, state, record),
            )
            return cursor.rowcount == 1

    def update(self, ticket_hash: bytes, state: str, record: bytes) -> None:
        """Replace the state and record of a stored hash; KeyError if there is none."""
        _check(ticket_hash, state)
        with self._lock:
            cursor = self._db.execute(
                "UPDATE tickets SET state = ?, record = ? WHERE ticket_hash = ?",
                (state, record, ticket_hash),
            )
        if cursor.rowcount != 1:
            raise KeyError(ticket_hash.hex())

    def get(self, ticket_hash: bytes) -> tuple[str, bytes] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT state, record FROM tickets WHERE ticket_hash = ?", (ticket_hash,)
            ).fetchone()
        return None if row is None else (row[0], bytes(row[1]))

    def in_state(self, state: str) -> list[bytes]:
        """Records in `state`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT record FROM tickets WHERE state = ? ORDER BY pos", (state,)
            ).fetchall()
        return [bytes(r[0]) for r in rows]

    def counts(self) -> dict[str, int]:
        """How many rows are in each state."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM tickets GROUP BY state").fetchall()
        return {state: int(n) for state, n in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> TicketRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check(ticket_hash: bytes, state: str) -> None:
    if type(ticket_hash) is not bytes or len(ticket_hash) != 32:
        raise ValueError("a ticket hash is 32 bytes")
    if not state or len(state) > 32:
        raise ValueError(f"bad ticket state {state!r}")
