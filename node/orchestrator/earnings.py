"""What an orchestrator is paid with: fresh ticket params for a quote, a job's tickets taken up to
the first one refused, and winning tickets redeemed on chain. The Recipient and the redemption
queue are not thread-safe: every call holds one lock and runs them in a worker thread."""

from __future__ import annotations

import os

import trio

from node.ledger import Ledger
from node.orchestrator.settings import OrchestratorConfig
from node.protocol import EXPIRED, PAYMENT, Refused
from payments.errors import ParamsExpired, PaymentError
from payments.fakes import MemoryTicketStore
from payments.interfaces import ChainView, RedemptionRecord, TicketStore
from payments.params import ParamsPolicy, TicketParams
from payments.queue import QueueConfig, RedemptionQueue
from payments.recipient import Receipt, Recipient
from payments.ticket import SignedTicket


class Earnings:
    """The orchestrator's Recipient and redemption queue, behind one lock."""

    def __init__(
        self,
        address: bytes,
        ledger: Ledger,
        config: OrchestratorConfig,
        secret: bytes | None = None,
        ticket_store: TicketStore | None = None,
    ) -> None:
        self.ledger = ledger
        self.price_floor = config.price_per_pixel
        policy = ParamsPolicy(
            ev=config.ticket_ev,
            redeem_gas=config.redeem_gas,
            tx_cost_multiplier=config.tx_cost_multiplier,
            ev_multiplier=config.ev_multiplier,
            validity_blocks=config.validity_blocks,
        )
        self._store = ticket_store or MemoryTicketStore()
        self.queue = RedemptionQueue(address, self._store, ledger, ledger,
                                     QueueConfig(config.redeem_gas))  # fmt: skip
        self.recipient = Recipient(address, secret or os.urandom(32), policy, ledger, self.queue)
        self._lock = trio.Lock()

    async def params(self, sender: bytes) -> TicketParams:
        """Ticket params for `sender` at the chain's current view; Refused(PAYMENT) if none."""
        now = await trio.to_thread.run_sync(self.ledger.view)
        async with self._lock:
            try:
                return await trio.to_thread.run_sync(
                    self.recipient.ticket_params, sender, self.price_floor, os.urandom(32), now
                )
            except PaymentError as exc:
                raise Refused(PAYMENT, str(exc)) from None

    async def receive(
        self, tickets: list[SignedTicket], sender: bytes
    ) -> tuple[list[Receipt], Refused | None]:
        """The receipts of the tickets up to the first one refused, and that refusal."""
        now = await trio.to_thread.run_sync(self.ledger.view)
        async with self._lock:
            return await trio.to_thread.run_sync(self._receive_all, tickets, sender, now)

    def _receive_all(
        self, tickets: list[SignedTicket], sender: bytes, now: ChainView
    ) -> tuple[list[Receipt], Refused | None]:
        """(in a worker thread, under the lock) What `receive` returns."""
        receipts: list[Receipt] = []
        for signed in tickets:
            if signed.ticket.sender != sender:
                return receipts, Refused(PAYMENT, "ticket sender is not the job's gateway")
            price = signed.price_per_pixel
            if price < self.price_floor:
                why = f"ticket priced at {price} wei/pixel, below {self.price_floor}"
                return receipts, Refused(PAYMENT, why)
            try:
                receipts.append(self.recipient.receive(signed, now))
            except ParamsExpired as exc:  # all of a job's tickets share their params
                return receipts, Refused(EXPIRED, f"ticket refused: {exc}")
            except PaymentError as exc:
                return receipts, Refused(PAYMENT, f"ticket refused: {exc}")
        return receipts, None

    async def redeem_one(self) -> list[RedemptionRecord]:
        """One step of the redemption queue (at most one transaction): the records it changed."""
        async with self._lock:
            now = await trio.to_thread.run_sync(self.ledger.view)
            return await trio.to_thread.run_sync(self.queue.process, now, 1)

    def pending(self) -> int:
        """Winning tickets not redeemed (or given up) yet."""
        return len(self._store.pending())
