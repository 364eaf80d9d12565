"""The TicketStore contract. A durable store (e.g. the node's SQLite one) passes the same suite by
subclassing `TicketStoreContract` and overriding `make_store`."""

from __future__ import annotations

import dataclasses

import pytest

from events.crypto import keccak256
from payments.fakes import MemoryTicketStore
from payments.interfaces import RedemptionRecord, RedemptionState, TicketStore
from payments.ticket import Ticket, WinningTicket


def record(n: int) -> RedemptionRecord:
    ticket = Ticket(b"\x01" * 20, b"\x02" * 20, 10**16, 2**255, n, keccak256(b"rand"), 7, bytes(32))
    winning = WinningTicket(ticket, bytes(64) + b"\x1b", n, 1000)
    return RedemptionRecord(winning=winning, ticket_hash=ticket.hash())


class TicketStoreContract:
    def make_store(self) -> TicketStore:
        raise NotImplementedError

    def test_add_is_idempotent_by_ticket_hash(self) -> None:
        store = self.make_store()
        assert store.add(record(1)) is True
        changed = dataclasses.replace(record(1), attempts=9)
        assert store.add(changed) is False
        assert store.get(record(1).ticket_hash) == record(1)

    def test_get_unknown_is_none(self) -> None:
        assert self.make_store().get(bytes(32)) is None

    def test_update_replaces_and_refuses_unknown(self) -> None:
        store = self.make_store()
        store.add(record(1))
        done = dataclasses.replace(
            record(1), state=RedemptionState.REDEEMED, tx_hash=b"\xaa" * 32, redeemed_block=5
        )
        store.update(done)
        assert store.get(done.ticket_hash) == done
        with pytest.raises(KeyError):
            store.update(record(2))

    def test_pending_lists_only_pending_oldest_first(self) -> None:
        store = self.make_store()
        for n in (3, 1, 2):
            store.add(record(n))
        store.update(dataclasses.replace(record(1), state=RedemptionState.EXPIRED))
        retried = dataclasses.replace(record(3), attempts=1, last_error="rpc", retry_at_block=9)
        store.update(retried)
        assert store.pending() == [retried, record(2)]


class TestMemoryTicketStore(TicketStoreContract):
    def make_store(self) -> TicketStore:
        return MemoryTicketStore()
