"""An author's side of the hash chain: numbers and links each new event it signs."""

from __future__ import annotations

from events.crypto import Signer
from events.envelope import SignedEvent, sign_event
from events.kinds import Body
from events.state import Head


class Author:
    """Signs the next event of one author's chain. Not thread-safe: one writer per author."""

    __slots__ = ("head", "signer")

    def __init__(self, signer: Signer, head: Head | None = None) -> None:
        self.signer = signer
        self.head = head

    @property
    def address(self) -> bytes:
        return self.signer.address

    def sign(self, body: Body, time_ms: int) -> SignedEvent:
        seq, prev = (self.head.seq + 1, self.head.id) if self.head else (1, b"")
        event = sign_event(
            self.signer,
            version=body.VERSION,
            kind=body.KIND,
            seq=seq,
            prev=prev,
            time_ms=time_ms,
            body=body.to_wire(),
        )
        self.head = Head(seq, event.id)
        return event
