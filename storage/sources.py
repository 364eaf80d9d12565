"""Open a log for reading whether it is a node's data directory or a `.castlog` file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from storage.castlog import Castlog
from storage.errors import StorageError
from storage.store import DB_NAME, EventStore, PeerHeads


@dataclass(frozen=True, slots=True)
class LogSource:
    rows: Iterator[tuple[int, bytes]]  # (position, raw) in log order
    evidence: list[tuple[bytes, bytes]]  # conflicting events kept aside: (raw, stored id)
    description: str
    castlog: Castlog | None = None  # a file's reader: its version and, once read, its trailer
    peers: list[PeerHeads] | None = None  # a store: how it compares with the heads peers announced


@contextmanager
def open_log(path: str | Path) -> Iterator[LogSource]:
    path = Path(path)
    if path.is_dir():
        if not (path / DB_NAME).exists():
            raise StorageError(f"{path} is not a castnet data directory (no {DB_NAME})")
        with EventStore.open_dir(path) as store:
            evidence = [(c.raw, c.other_id) for c in store.conflicts()]
            peers = store.compare_peer_heads()
            yield LogSource(store.read(), evidence, f"store {path}", peers=peers)
    elif path.exists():
        castlog = Castlog(path)
        yield LogSource(castlog.rows(), [], f"castlog {path}", castlog)
    else:
        raise StorageError(f"{path}: no such file or directory")
