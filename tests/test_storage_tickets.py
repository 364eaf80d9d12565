"""The durable ticket store: storage's SQLite rows and the node's TicketStore on them pass the
payments TicketStore contract, survive a reopen, and a redemption queue resumes from them."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest
from test_payments_queue import after_params_expire, winners
from test_payments_store import TicketStoreContract, record

from node.orchestrator.tickets import SqliteTicketStore, decode_record, encode_record
from payments.interfaces import RedemptionState, TicketStore
from payments.queue import QueueConfig, RedemptionQueue
from storage.errors import StoreCorrupt
from storage.tickets import TICKETS_DB, TicketRows


class TestSqliteTicketStore(TicketStoreContract):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.dir = tmp_path

    def make_store(self) -> TicketStore:
        return SqliteTicketStore.open_dir(self.dir / f"s{len(list(self.dir.iterdir()))}")


def test_record_codec_round_trips_every_field() -> None:
    r = dataclasses.replace(
        record(7), state=RedemptionState.FAILED, attempts=3, last_error="gas 🚫",
        retry_at_block=2**40, tx_hash=b"\xee" * 32, redeemed_block=99,
    )  # fmt: skip
    assert decode_record(encode_record(r)) == r


def test_records_survive_reopen_and_keep_order(tmp_path: Path) -> None:
    store = SqliteTicketStore.open_dir(tmp_path)
    for n in (5, 2, 9):
        store.add(record(n))
    store.update(dataclasses.replace(record(2), state=RedemptionState.REDEEMED, tx_hash=b"x"))
    store.close()
    again = SqliteTicketStore.open_dir(tmp_path)
    assert again.pending() == [record(5), record(9)]
    assert again.counts() == {"pending": 2, "redeemed": 1}
    assert again.add(record(5)) is False


def test_redemption_queue_resumes_from_the_store(tmp_path: Path) -> None:
    """A winning ticket stored before a 'crash' is redeemed by a new queue on the reopened file."""
    world, (win,) = winners()
    me, chain = win.ticket.recipient, world.chain
    store = SqliteTicketStore.open_dir(tmp_path)
    assert RedemptionQueue(me, store, chain, chain, QueueConfig(100_000)).add(win)
    store.close()  # the process stops before the params expire
    store = SqliteTicketStore.open_dir(tmp_path)
    queue = RedemptionQueue(me, store, chain, chain, QueueConfig(100_000))
    assert queue.pending_face_value(win.ticket.sender) == win.ticket.face_value
    after_params_expire(world, gas_price=0)
    changed = queue.process(world.now)
    assert [c.state for c in changed] == [RedemptionState.REDEEMED]
    assert chain.paid[me] == win.ticket.face_value
    assert store.pending() == [] and store.counts() == {"redeemed": 1}
    assert queue.pending_face_value(win.ticket.sender) == 0


def test_bad_input_and_corruption_are_clear_errors(tmp_path: Path) -> None:
    rows = TicketRows.open_dir(tmp_path)
    with pytest.raises(ValueError, match="32 bytes"):
        rows.add(b"short", "pending", b"")
    with pytest.raises(KeyError):
        rows.update(b"\x01" * 32, "pending", b"")
    rows.add(b"\x01" * 32, "pending", b"\xc1 not msgpack")
    rows.close()
    with pytest.raises(StoreCorrupt, match="unreadable ticket record"):
        SqliteTicketStore.open_dir(tmp_path).pending()
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    (bogus / TICKETS_DB).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreCorrupt, match="not a ticket store"):
        TicketRows.open_dir(bogus)


def test_rows_are_plain_sqlite(tmp_path: Path) -> None:
    store = SqliteTicketStore.open_dir(tmp_path)
    store.add(record(1))
    store.close()
    with sqlite3.connect(tmp_path / TICKETS_DB) as db:
        (state, raw) = db.execute("SELECT state, record FROM tickets").fetchone()
    assert state == "pending" and decode_record(raw) == record(1)
