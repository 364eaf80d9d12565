"""How a gateway pays an orchestrator for a segment: ask it for ticket params (a quote), sign
tickets enough to bring our mirror of its balance up to the segment's fee (plus a margin), and
hold the estimate against that balance until the result says what was really charged.

Segments in flight together (the overlap) reach the orchestrator in any order, so a segment
never counts on what another one's tickets add beyond that segment's own fee until the
orchestrator has answered for them (`landed`): otherwise the later segment could arrive first,
short of the credit it counted on, and be refused."""

from __future__ import annotations

import contextlib
from fractions import Fraction

import trio
from libp2p.peer.id import ID

from events import kinds as k
from node.ledger import Ledger
from node.protocol import (
    QUOTE,
    QUOTE_PROTOCOL,
    QUOTE_REQUEST,
    REFUSED,
    VERSION,
    Refused,
    params_from_wire,
)
from p2p.errors import ProtocolError
from p2p.framing import MessageStream
from p2p.node import P2PNode
from payments.balance import Balances, segment_fee, tickets_needed
from payments.errors import PaymentError
from payments.params import TicketParams
from payments.sender import Sender
from payments.ticket import SignedTicket

MAX_TICKETS = 256  # per segment: more means the ticket EV is far too low for the work


class Payer:
    """The gateway's wallet side: quotes, tickets and the mirrored balances."""

    def __init__(
        self, node: P2PNode, address: bytes, sender: Sender, ledger: Ledger, fee_margin: Fraction
    ) -> None:
        self.node, self.address, self.sender, self.ledger = node, address, sender, ledger
        self.fee_margin = fee_margin
        self.mirror = Balances()  # what each orchestrator's balance for us should be
        # tickets sent but not yet answered for: first ticket's hash -> (orchestrator, what
        # they add to its balance beyond their own segment's hold)
        self._unanswered: dict[bytes, tuple[str, Fraction]] = {}

    async def quote(self, peer: ID) -> TicketParams:
        """The orchestrator's ticket params for our next segment."""
        stream = await self.node.running.host.new_stream(peer, [QUOTE_PROTOCOL])
        try:
            cfg = self.node.config
            ms = MessageStream(stream, cfg.max_frame_bytes, cfg.frame_timeout_s)  # type: ignore[arg-type]
            await ms.send([QUOTE_REQUEST, VERSION, self.address])
            reply = await ms.receive()
            raise_refused(reply)
            if reply[0] != QUOTE or len(reply) != 4:
                raise ProtocolError("expected a quote")
            return params_from_wire(reply[1])
        finally:
            await close(stream)

    async def tickets(self, params: TicketParams, pixels: int) -> list[SignedTicket]:
        """Tickets enough to bring this orchestrator's balance up to the segment's fee."""
        session = self.sender.start_session(params, nonce=0)
        now = await trio.to_thread.run_sync(self.ledger.view)
        fee = segment_fee(pixels, params.price_per_pixel) * self.fee_margin
        key = params.recipient.hex()
        count = tickets_needed(fee, self.confirmed_balance(key), params.ev()) if fee else 0
        if count > MAX_TICKETS:
            raise PaymentError(f"{count} tickets needed for one segment: the ticket EV is too low")
        tickets = []
        if count:
            tickets = await trio.to_thread.run_sync(self.sender.create_tickets, session, count, now)
            self.mirror.credit(key, params.ev() * count)
        self.sender.end_session(session)
        # hold the estimate against the balance until the result says what was really charged,
        # so segments in flight together each bring their own tickets
        hold = segment_fee(pixels, params.price_per_pixel)
        self.mirror.debit(key, hold)
        surplus = params.ev() * count - hold
        if tickets and surplus > 0:
            self._unanswered[tickets[0].ticket.hash()] = (key, surplus)
        return tickets

    def confirmed_balance(self, key: str) -> Fraction:
        """The mirrored balance without the surplus of tickets the orchestrator may not have
        taken yet: what a new segment can count on whichever order they arrive in."""
        ahead = sum((s for k, s in self._unanswered.values() if k == key), Fraction(0))
        return self.mirror.balance(key) - ahead

    def landed(self, tickets: list[SignedTicket]) -> None:
        """The orchestrator answered for these tickets (a result, a refusal or a failure): from
        now on their surplus counts for the next segments."""
        if tickets:
            self._unanswered.pop(tickets[0].ticket.hash(), None)


def issued(t: SignedTicket, job_id: bytes) -> k.TicketIssued:
    """The log's record of a ticket we sent for `job_id`."""
    x = t.ticket
    return k.TicketIssued(x.hash(), x.recipient, x.face_value, x.win_prob, x.sender_nonce,
                          x.recipient_rand_hash, x.creation_round, x.creation_round_block_hash,
                          t.sig, job_id)  # fmt: skip


def raise_refused(reply: list[object]) -> None:
    """Raise the peer's refusal, when the reply is one."""
    if reply[0] == REFUSED:
        if len(reply) != 3 or not isinstance(reply[1], str) or not isinstance(reply[2], str):
            raise ProtocolError("malformed refusal")
        raise Refused(reply[1], reply[2])


async def close(stream: object) -> None:
    with contextlib.suppress(Exception):  # a reset stream is fine
        await stream.close()  # type: ignore[attr-defined]
