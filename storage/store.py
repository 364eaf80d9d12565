"""The SQLite event store: insert-only, one row per event, `(author, seq)` unique.

A second event at an existing `(author, seq)` is equivocation evidence: it goes to the `conflicts`
table, never over the first. Events must extend their author's chain (seq = head + 1, prev = head
id); an event past a gap is refused so the caller can hold it until sync fills the gap. Appends are
batched in one transaction with synchronous=FULL: when `append` returns, the batch is durable.
"""

from __future__ import annotations

import enum
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from events.envelope import SignedEvent
from events.state import Head, State
from events.state_codec import STATE_FORMAT, decode_state, encode_state
from storage.errors import StorageError, StoreCorrupt

DB_NAME = "events.sqlite"
KEEP_SNAPSHOTS = 2
KEEP_PEERS = 64  # peers whose announced heads are remembered
_MAX_IN = 500  # authors named in one query (SQLite bounds a statement's parameters)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    pos     INTEGER PRIMARY KEY,
    id      BLOB NOT NULL UNIQUE,
    author  BLOB NOT NULL,
    seq     INTEGER NOT NULL,
    kind    INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    raw     BLOB NOT NULL,
    UNIQUE (author, seq)
);
CREATE TABLE IF NOT EXISTS conflicts (
    id       BLOB PRIMARY KEY,
    author   BLOB NOT NULL,
    seq      INTEGER NOT NULL,
    other_id BLOB NOT NULL,
    raw      BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS heads (
    author BLOB PRIMARY KEY,
    seq    INTEGER NOT NULL,
    id     BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS peer_heads (
    peer    TEXT NOT NULL,
    author  BLOB NOT NULL,
    seq     INTEGER NOT NULL,
    id      BLOB NOT NULL,
    seen_ms INTEGER NOT NULL,
    PRIMARY KEY (peer, author)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    pos    INTEGER PRIMARY KEY,
    format INTEGER NOT NULL,
    state  BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS conflicts_no_update BEFORE UPDATE ON conflicts
    BEGIN SELECT RAISE(ABORT, 'evidence is append-only'); END;
CREATE TRIGGER IF NOT EXISTS conflicts_no_delete BEFORE DELETE ON conflicts
    BEGIN SELECT RAISE(ABORT, 'evidence is append-only'); END;
"""


class Outcome(enum.Enum):
    APPENDED = "appended"
    DUPLICATE = "duplicate"  # already stored: nothing to do
    EQUIVOCATION = "equivocation"  # kept in `conflicts` as evidence
    GAP = "gap"  # predecessors missing: hold and sync
    BROKEN_CHAIN = "broken-chain"  # right seq, but prev is not the stored head


@dataclass(frozen=True, slots=True)
class AppendResult:
    outcome: Outcome
    position: int = 0  # log position when appended or duplicate
    other_id: bytes = b""  # the stored event's id for an equivocation


@dataclass(frozen=True, slots=True)
class Conflict:
    id: bytes
    author: bytes
    seq: int
    other_id: bytes
    raw: bytes


@dataclass(slots=True)
class PeerHeads:
    """How this store compares with the heads one peer last announced."""

    peer: str
    seen_ms: int
    authors: int = 0
    behind: list[tuple[bytes, int, int]] = field(default_factory=list)  # author, theirs, ours
    differs: list[tuple[bytes, int]] = field(default_factory=list)  # another event at their head

    @property
    def complete(self) -> bool:
        return not self.behind and not self.differs


class EventStore:
    """One SQLite file. Thread-safe: calls are serialized by a lock, so it can be used from
    `trio.to_thread` workers. Callers verify signatures before appending."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._heads = self._load_heads()
            self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupt(f"{self.path}: not a usable event store ({exc})") from None

    @classmethod
    def open_dir(cls, data_dir: str | Path) -> EventStore:
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        return cls(path / DB_NAME)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------

    def append(self, events: Sequence[SignedEvent]) -> list[AppendResult]:
        """Append a batch in one durable transaction; one result per event, in order."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                self._refresh_if_changed()
                heads = dict(self._heads)  # committed only with the transaction
                results, rows, conflicts = self._plan(events, heads)
                if rows:
                    db.executemany(
                        "INSERT INTO events (id, author, seq, kind, time_ms, raw)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                    touched = {e.author for e in events if e.author in heads}
                    db.executemany(
                        "INSERT OR REPLACE INTO heads (author, seq, id) VALUES (?, ?, ?)",
                        [(a, heads[a].seq, heads[a].id) for a in touched],
                    )
                if conflicts:
                    db.executemany(
                        "INSERT OR IGNORE INTO conflicts (id, author, seq, other_id, raw)"
                        " VALUES (?, ?, ?, ?, ?)",
                        conflicts,
                    )
                last = db.execute("SELECT MAX(pos) FROM events").fetchone()[0] or 0
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._heads = heads
            self._data_version = db.execute("PRAGMA data_version").fetchone()[0]
        return self._with_positions(results, last, len(rows))

    def _plan(
        self, events: Sequence[SignedEvent], heads: dict[bytes, Head]
    ) -> tuple[list[AppendResult | None], list[tuple[object, ...]], list[tuple[object, ...]]]:
        results: list[AppendResult | None] = []
        rows: list[tuple[object, ...]] = []
        conflicts: list[tuple[object, ...]] = []
        batch_ids: dict[tuple[bytes, int], bytes] = {}
        for e in events:
            head = heads.get(e.author)
            head_seq = head.seq if head else 0
            if e.seq <= head_seq:
                stored = batch_ids.get((e.author, e.seq)) or self._id_at(e.author, e.seq)
                if stored == e.id:
                    results.append(AppendResult(Outcome.DUPLICATE, self._position_of(e.id)))
                else:
                    conflicts.append((e.id, e.author, e.seq, stored, e.raw))
                    results.append(AppendResult(Outcome.EQUIVOCATION, other_id=stored or b""))
            elif e.seq > head_seq + 1:
                results.append(AppendResult(Outcome.GAP))
            elif e.prev != (head.id if head else b""):
                results.append(AppendResult(Outcome.BROKEN_CHAIN))
            else:
                rows.append((e.id, e.author, e.seq, e.kind, e.time_ms, e.raw))
                heads[e.author] = Head(e.seq, e.id)
                batch_ids[(e.author, e.seq)] = e.id
                results.append(None)  # position filled after the insert
        return results, rows, conflicts

    @staticmethod
    def _with_positions(
        results: list[AppendResult | None], last: int, inserted: int
    ) -> list[AppendResult]:
        # Rows were inserted in order with consecutive INTEGER PRIMARY KEYs ending at `last`.
        position = last - inserted
        out: list[AppendResult] = []
        for r in results:
            if r is None:
                position += 1
                out.append(AppendResult(Outcome.APPENDED, position))
            else:
                out.append(r)
        return out

    def _refresh_if_changed(self) -> None:
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:  # another connection wrote: reload its heads
            self._heads = self._load_heads()
            self._data_version = version

    def _load_heads(self) -> dict[bytes, Head]:
        return {a: Head(s, i) for a, s, i in self._db.execute("SELECT author, seq, id FROM heads")}

    def _id_at(self, author: bytes, seq: int) -> bytes | None:
        row = self._db.execute(
            "SELECT id FROM events WHERE author = ? AND seq = ?", (author, seq)
        ).fetchone()
        return row[0] if row else None

    def _position_of(self, event_id: bytes) -> int:
        row = self._db.execute("SELECT pos FROM events WHERE id = ?", (event_id,)).fetchone()
        return int(row[0]) if row else 0

    # -- reading ---------------------------------------------------------------------------

    def heads(self) -> dict[bytes, Head]:
        with self._lock:
            self._refresh_if_changed()
            return dict(self._heads)

    def last_position(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(pos) FROM events").fetchone()
        return int(row[0] or 0)

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def read(
        self, after: int = 0, limit: int | None = None, batch: int = 4096
    ) -> Iterator[tuple[int, bytes]]:
        """(position, raw) in log order after position `after`, fetched in bounded batches."""
        remaining = limit if limit is not None else -1
        while remaining != 0:
            size = batch if remaining < 0 else min(batch, remaining)
            with self._lock:
                rows = self._db.execute(
                    "SELECT pos, raw FROM events WHERE pos > ? ORDER BY pos LIMIT ?", (after, size)
                ).fetchall()
            yield from rows
            if len(rows) < size:
                return
            after = rows[-1][0]
            remaining = remaining - len(rows) if remaining > 0 else remaining

    def read_author(self, author: bytes, after_seq: int = 0, limit: int = 1000) -> list[bytes]:
        """Raw events of one author with seq > after_seq, in seq order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT raw FROM events WHERE author = ? AND seq > ? ORDER BY seq LIMIT ?",
                (author, after_seq, limit),
            ).fetchall()
        return [r[0] for r in rows]

    def first_of_kind(self, kind: int) -> list[bytes]:
        """Raw events of `kind` at seq 1 (the first event of their author's chain)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT raw FROM events WHERE seq = 1 AND kind = ? ORDER BY pos", (kind,)
            ).fetchall()
        return [r[0] for r in rows]

    def read_authors(
        self, after: int, authors: Sequence[bytes], limit: int
    ) -> list[tuple[int, bytes, int, bytes, bytes]]:
        """(position, author, seq, id, raw) of the given authors' events after position
        `after`, in log order."""
        if not authors:
            return []
        if len(authors) > _MAX_IN:  # past SQLite's bound parameters: filter a scan instead
            wanted, last = set(authors), after
            out: list[tuple[int, bytes, int, bytes, bytes]] = []
            while len(out) < limit:
                with self._lock:
                    rows = self._db.execute(
                        "SELECT pos, author, seq, id, raw FROM events WHERE pos > ?"
                        " ORDER BY pos LIMIT ?",
                        (last, 4096),
                    ).fetchall()
                if not rows:
                    break
                last = rows[-1][0]
                out += [r for r in rows if bytes(r[1]) in wanted]
            rows = out[:limit]
        else:
            marks = ",".join("?" * len(authors))
            with self._lock:
                rows = self._db.execute(
                    f"SELECT pos, author, seq, id, raw FROM events WHERE pos > ? AND author IN"
                    f" ({marks}) ORDER BY pos LIMIT ?",
                    (after, *authors, limit),
                ).fetchall()
        return [(int(p), bytes(a), int(s), bytes(i), bytes(r)) for p, a, s, i, r in rows]

    def first_missing_position(self, theirs: Mapping[bytes, tuple[int, bytes]]) -> int | None:
        """The first log position holding an event that a peer with heads `theirs`
        (author -> (seq, id)) lacks or contradicts; None when it has everything we have."""
        start: int | None = None
        with self._lock:
            self._refresh_if_changed()
            for author, head in self._heads.items():
                their_seq, their_id = theirs.get(author, (0, b""))
                if head.seq < their_seq or (head.seq == their_seq and head.id == their_id):
                    continue
                # from their head on: a different event at their head is evidence they need
                row = self._db.execute(
                    "SELECT pos FROM events WHERE author = ? AND seq = ?",
                    (author, max(their_seq, 1)),
                ).fetchone()
                if row is not None and (start is None or row[0] < start):
                    start = int(row[0])
        return start

    def read_missing(
        self, after: int, theirs: Mapping[bytes, tuple[int, bytes]], scan: int
    ) -> tuple[list[bytes], int]:
        """Raw events after position `after`, in log order, that a peer with heads `theirs`
        lacks, scanning at most `scan` rows; returns them and the last position scanned
        (equal to `after` at the end of the log). Log order keeps causal order across authors."""
        with self._lock:
            rows = self._db.execute(
                "SELECT pos, author, seq, id, raw FROM events WHERE pos > ? ORDER BY pos LIMIT ?",
                (after, scan),
            ).fetchall()
        out = []
        for _, author, seq, eid, raw in rows:
            their_seq, their_id = theirs.get(author, (0, b""))
            if seq > their_seq or (seq == their_seq and eid != their_id):
                out.append(bytes(raw))
        return out, (int(rows[-1][0]) if rows else after)

    def get(self, event_id: bytes) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT raw FROM events WHERE id = ?", (event_id,)).fetchone()
        return row[0] if row else None

    # -- heads seen from peers ---------------------------------------------------------------

    def record_peer_heads(
        self, peer: str, heads: Mapping[bytes, tuple[int, bytes]], seen_ms: int
    ) -> None:
        """Remember the heads a peer announced (as its sync request did), replacing what it
        announced before; only the `KEEP_PEERS` peers seen last are kept."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM peer_heads WHERE peer = ?", (peer,))
                rows = [(peer, a, seq, eid, seen_ms) for a, (seq, eid) in heads.items()]
                db.executemany(
                    "INSERT INTO peer_heads (peer, author, seq, id, seen_ms) VALUES (?,?,?,?,?)",
                    rows or [(peer, b"", 0, b"", seen_ms)],  # an empty log was still seen
                )
                db.execute(
                    "DELETE FROM peer_heads WHERE peer NOT IN (SELECT peer FROM peer_heads"
                    " GROUP BY peer ORDER BY MAX(seen_ms) DESC LIMIT ?)",
                    (KEEP_PEERS,),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def compare_peer_heads(self) -> list[PeerHeads]:
        """For each peer whose heads were recorded: where this store is behind them, or holds
        another event at one of their heads."""
        with self._lock:
            self._refresh_if_changed()
            rows = self._db.execute(
                "SELECT p.peer, p.author, p.seq, p.id, p.seen_ms, e.id FROM peer_heads p"
                " LEFT JOIN events e ON e.author = p.author AND e.seq = p.seq"
                " ORDER BY p.peer, p.author"
            ).fetchall()
            heads = dict(self._heads)
        out: dict[str, PeerHeads] = {}
        for peer, author, seq, eid, seen_ms, ours in rows:
            view = out.setdefault(peer, PeerHeads(peer, int(seen_ms)))
            if not author:
                continue
            view.authors += 1
            mine = heads.get(bytes(author))
            have = mine.seq if mine is not None else 0
            if have < seq:
                view.behind.append((bytes(author), int(seq), have))
            elif ours is not None and bytes(ours) != bytes(eid):
                view.differs.append((bytes(author), int(seq)))
        return list(out.values())

    def conflicts(self) -> list[Conflict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, author, seq, other_id, raw FROM conflicts ORDER BY rowid"
            ).fetchall()
        return [Conflict(*row) for row in rows]

    # -- snapshots -------------------------------------------------------------------------

    def save_snapshot(self, position: int, state: State) -> None:
        """Store `state` as the fold of events 1..position; keeps the newest few."""
        blob = encode_state(state)
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT OR REPLACE INTO snapshots (pos, format, state) VALUES (?, ?, ?)",
                    (position, STATE_FORMAT, blob),
                )
                db.execute(
                    "DELETE FROM snapshots WHERE pos NOT IN"
                    " (SELECT pos FROM snapshots ORDER BY pos DESC LIMIT ?)",
                    (KEEP_SNAPSHOTS,),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def latest_snapshot(self) -> tuple[int, bytes] | None:
        """(position, encoded state) of the newest snapshot this code can read."""
        with self._lock:
            row = self._db.execute(
                "SELECT pos, state FROM snapshots WHERE format = ? ORDER BY pos DESC LIMIT 1",
                (STATE_FORMAT,),
            ).fetchone()
        return (int(row[0]), bytes(row[1])) if row else None

    def load_snapshot(self) -> tuple[int, State] | None:
        found = self.latest_snapshot()
        if found is None:
            return None
        position, blob = found
        return position, decode_state(blob)


__all__ = ["AppendResult", "Conflict", "EventStore", "Outcome", "StorageError"]
