"""The SQLite event store: append rules, equivocation evidence, immutability, snapshots, blobs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from events import kinds as k
from events.author import Author
from events.crypto import LocalKeySigner
from events.envelope import sign_event
from events.fold import fold
from node.local.synth import synth_events
from storage.blobs import DirBlobStore, MemoryBlobStore
from storage.errors import BlobNotFound, StoreClosed, StoreCorrupt
from storage.replay import decode_stream, load_state, snapshot
from storage.service import StoreService
from storage.store import EventStore, Outcome
from tests.conftest import key


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    with EventStore.open_dir(tmp_path / "node") as s:
        yield s


def _offers(author: Author, n: int) -> list:
    return [author.sign(k.Offer(i + 1, 1, (), 1, "p", ()), i) for i in range(n)]


def test_append_read_and_heads(store: EventStore, authors: list[Author]) -> None:
    a, b = authors[0], authors[1]
    events = _offers(a, 3) + _offers(b, 2)
    results = store.append(events)
    assert [r.outcome for r in results] == [Outcome.APPENDED] * 5
    assert [r.position for r in results] == [1, 2, 3, 4, 5]
    assert [raw for _, raw in store.read()] == [e.raw for e in events]
    assert [raw for _, raw in store.read(after=2, limit=2)] == [events[2].raw, events[3].raw]
    assert store.read_author(a.address, after_seq=1) == [events[1].raw, events[2].raw]
    assert store.heads()[a.address].id == events[2].id
    assert store.get(events[4].id) == events[4].raw


def test_duplicates_gaps_and_broken_chains_are_not_stored(
    store: EventStore, authors: list[Author]
) -> None:
    a = authors[0]
    first, second, third = _offers(a, 3)
    assert store.append([first])[0].outcome is Outcome.APPENDED
    assert store.append([first])[0] == store.append([first])[0]
    assert store.append([first])[0].outcome is Outcome.DUPLICATE
    assert store.append([third])[0].outcome is Outcome.GAP
    stranger = sign_event(a.signer, version=1, kind=2, seq=2, prev=bytes(32), time_ms=0, body=["x"])
    assert store.append([stranger])[0].outcome is Outcome.BROKEN_CHAIN
    assert store.count() == 1
    # once the gap is filled, the held event goes in
    assert [r.outcome for r in store.append([second, third])] == [Outcome.APPENDED] * 2


def test_equivocation_is_kept_as_evidence_never_overwriting(
    store: EventStore, authors: list[Author]
) -> None:
    signer = authors[0].signer
    one = sign_event(signer, version=1, kind=2, seq=1, prev=b"", time_ms=0, body=["one"])
    two = sign_event(signer, version=1, kind=2, seq=1, prev=b"", time_ms=0, body=["two"])
    store.append([one])
    result = store.append([two])[0]
    assert result.outcome is Outcome.EQUIVOCATION and result.other_id == one.id
    assert [raw for _, raw in store.read()] == [one.raw]
    (conflict,) = store.conflicts()
    assert (conflict.id, conflict.other_id, conflict.raw) == (two.id, one.id, two.raw)
    store.append([two])  # seen again: still one piece of evidence
    assert len(store.conflicts()) == 1


def test_events_cannot_be_updated_or_deleted(store: EventStore, authors: list[Author]) -> None:
    store.append(_offers(authors[0], 2))
    db = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE events SET raw = x'00' WHERE pos = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM events")
    db.close()
    assert store.count() == 2


def test_two_connections_share_the_chain(tmp_path: Path, authors: list[Author]) -> None:
    a = authors[0]
    first, second, third = _offers(a, 3)
    with EventStore(tmp_path / "s.sqlite") as one, EventStore(tmp_path / "s.sqlite") as two:
        one.append([first])
        assert two.append([second])[0].outcome is Outcome.APPENDED
        assert one.append([third])[0].outcome is Outcome.APPENDED
        assert one.count() == 3


def test_snapshot_plus_tail_equals_full_fold(tmp_path: Path) -> None:
    events = list(synth_events(600, 4, seed=5))
    with EventStore.open_dir(tmp_path / "n") as store:
        store.append(events[:350])
        snapshot(store, load_state(store))
        store.append(events[350:])
        restored = load_state(store)
        assert restored == fold(events)
        assert load_state(store, use_snapshot=False, verify=True) == restored
        assert store.load_snapshot()[0] == 350


def test_unreadable_snapshot_falls_back_to_full_fold(tmp_path: Path) -> None:
    events = list(synth_events(120, 3, seed=6))
    with EventStore.open_dir(tmp_path / "n") as store:
        store.append(events)
        store._db.execute("INSERT INTO snapshots (pos, format, state) VALUES (100, 1, x'c1')")
        assert load_state(store) == fold(events)


def test_altered_stored_event_is_detected_on_verified_replay(tmp_path: Path) -> None:
    events = list(synth_events(20, 3, seed=7))
    with EventStore.open_dir(tmp_path / "n") as store:
        store.append(events)
        raw = bytearray(events[4].raw)
        raw[-70] ^= 1
        store._db.execute("DROP TRIGGER events_no_update")
        store._db.execute("UPDATE events SET raw = ? WHERE pos = 5", (bytes(raw),))
        with pytest.raises(Exception, match="position 5"):
            list(decode_stream(store.read(), verify=True))


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "junk.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreCorrupt, match="not a usable event store"):
        EventStore(tmp_path / "junk.sqlite")


async def test_group_commit_batches_concurrent_appends(tmp_path: Path) -> None:
    writers = [Author(LocalKeySigner(key(100 + i))) for i in range(20)]
    batches = [_offers(w, 10) for w in writers]
    with EventStore.open_dir(tmp_path / "n") as store:
        service = StoreService(store)
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)

            async def write(events: list) -> None:
                for event in events:
                    result = await service.append(event)
                    assert result.outcome is Outcome.APPENDED
                    # durable: a fresh connection sees it
                    assert result.position > 0

            with trio.fail_after(30):
                async with trio.open_nursery() as writers_nursery:
                    for events in batches:
                        writers_nursery.start_soon(write, events)
            service.close()
        assert store.count() == 200
        assert service.commits < 200  # appends from concurrent tasks shared transactions
        with EventStore(store.path) as fresh:
            assert fresh.count() == 200


async def test_an_append_after_the_writer_stopped_says_so(tmp_path: Path) -> None:
    writer = Author(LocalKeySigner(key(120)))
    first, second = _offers(writer, 2)
    with EventStore.open_dir(tmp_path / "n") as store:
        service = StoreService(store)
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            await service.append(first)
            nursery.cancel_scope.cancel()  # the node stops: its writer task ends
        with pytest.raises(StoreClosed, match="is closed"):
            await service.append(second)
        service.close()
        with pytest.raises(StoreClosed, match=str(store.path)):
            service.enqueue([second])
        assert store.count() == 1


@pytest.mark.parametrize("make", [lambda p: DirBlobStore(p / "blobs"), lambda p: MemoryBlobStore()])
def test_blob_store_contract(tmp_path: Path, make) -> None:
    blobs = make(tmp_path)
    digest = blobs.put(b"segment bytes")
    assert blobs.has(digest) and blobs.get(digest) == b"segment bytes"
    assert blobs.put(b"segment bytes") == digest
    with pytest.raises(BlobNotFound):
        blobs.get(bytes(32))


def test_corrupted_blob_is_refused(tmp_path: Path) -> None:
    blobs = DirBlobStore(tmp_path / "blobs")
    digest = blobs.put(b"x" * 1000)
    path = tmp_path / "blobs" / digest.hex()[:2] / digest.hex()
    path.write_bytes(b"y" * 1000)
    with pytest.raises(StoreCorrupt, match="does not match"):
        blobs.get(digest)
    assert not list((tmp_path / "blobs").rglob(".tmp-*"))
