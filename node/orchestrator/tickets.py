"""payments' TicketStore on storage's SQLite `TicketRows`: a RedemptionRecord travels as a
positional msgpack array (uint256 values as 32 big-endian bytes), so winning tickets survive a
restart and the redemption queue resumes where it stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack

from node.protocol import from_u256, u256
from payments.interfaces import RedemptionRecord, RedemptionState
from payments.ticket import Ticket, WinningTicket
from storage.errors import StoreCorrupt
from storage.tickets import TicketRows

RECORD_VERSION = 1


def encode_record(r: RedemptionRecord) -> bytes:
    w, t = r.winning, r.winning.ticket
    ticket = [t.recipient, t.sender, u256(t.face_value), u256(t.win_prob), u256(t.sender_nonce),
              t.recipient_rand_hash, t.creation_round, t.creation_round_block_hash]  # fmt: skip
    fields = [RECORD_VERSION, ticket, w.sig, u256(w.recipient_rand), w.expiration_block,
              r.state.value, r.attempts, r.last_error, r.retry_at_block, r.tx_hash,
              r.redeemed_block]  # fmt: skip
    return msgpack.packb(fields)


def decode_record(raw: bytes) -> RedemptionRecord:
    try:
        items: Any = msgpack.unpackb(raw)
        version, t, sig, rand, expiration, state, attempts, error, retry, tx, block = items
        if version != RECORD_VERSION:
            raise ValueError(f"unknown record version {version!r}")
        ticket = Ticket(t[0], t[1], from_u256(t[2]), from_u256(t[3]), from_u256(t[4]), t[5],
                        t[6], t[7])  # fmt: skip
        winning = WinningTicket(ticket, sig, from_u256(rand), expiration)
        return RedemptionRecord(
            winning=winning,
            ticket_hash=ticket.hash(),
            state=RedemptionState(state),
            attempts=attempts,
            last_error=error,
            retry_at_block=retry,
            tx_hash=tx,
            redeemed_block=block,
        )
    except Exception as exc:  # any malformed row is corruption of our own file
        raise StoreCorrupt(f"unreadable ticket record: {exc!r}") from None


class SqliteTicketStore:
    """A payments.interfaces.TicketStore whose every change is durable when the call returns."""

    def __init__(self, rows: TicketRows) -> None:
        self.rows = rows

    @classmethod
    def open_dir(cls, data_dir: str | Path) -> SqliteTicketStore:
        return cls(TicketRows.open_dir(data_dir))

    def add(self, record: RedemptionRecord) -> bool:
        return self.rows.add(record.ticket_hash, record.state.value, encode_record(record))

    def update(self, record: RedemptionRecord) -> None:
        self.rows.update(record.ticket_hash, record.state.value, encode_record(record))

    def get(self, ticket_hash: bytes) -> RedemptionRecord | None:
        row = self.rows.get(ticket_hash)
        return None if row is None else decode_record(row[1])

    def pending(self) -> list[RedemptionRecord]:
        return [decode_record(raw) for raw in self.rows.in_state(RedemptionState.PENDING.value)]

    def counts(self) -> dict[str, int]:
        return self.rows.counts()

    def close(self) -> None:
        self.rows.close()
