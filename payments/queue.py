"""The redemption queue: winning tickets are stored durably first, then redeemed on chain once
their params have expired, before the ticket itself expires, only when the payout beats the gas,
retried on failure and never paid twice (the store's state plus the chain's used-ticket check)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

from payments.errors import RedemptionFailed, TicketAlreadyRedeemed
from payments.funds import reserve_alloc
from payments.interfaces import (
    ChainBroker,
    ChainView,
    RedemptionRecord,
    RedemptionState,
    SenderFunds,
    TicketStore,
)
from payments.ticket import WinningTicket

# The TicketBroker refuses a ticket once currentRound >= creationRound + ticketValidityPeriod.
DEFAULT_VALIDITY_ROUNDS = 2


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """`redeem_gas`: gas a redemption costs; a ticket is redeemed only when its expected payout
    exceeds `redeem_gas * gas_price * profit_multiplier`. A failed attempt waits
    `retry_backoff_blocks` blocks before the next."""

    redeem_gas: int
    validity_rounds: int = DEFAULT_VALIDITY_ROUNDS
    profit_multiplier: Fraction = Fraction(1)
    retry_backoff_blocks: int = 1


class RedemptionQueue:
    """Winning tickets of one recipient, waiting to be redeemed; `process` is called per block."""

    def __init__(
        self,
        recipient: bytes,
        store: TicketStore,
        chain: ChainBroker,
        funds: SenderFunds,
        config: QueueConfig,
    ) -> None:
        self._recipient = recipient
        self._store = store
        self._chain = chain
        self._funds = funds
        self._config = config
        # face value per sender of tickets not yet resolved: counts against the sender's float
        self._pending: dict[bytes, int] = {}
        for record in store.pending():
            self._count(record.winning, +1)

    def add(self, winning: WinningTicket) -> bool:
        """Store a winning ticket durably; False if it was already stored (then nothing changes)."""
        record = RedemptionRecord(winning=winning, ticket_hash=winning.ticket_hash)
        if not self._store.add(record):
            return False
        self._count(winning, +1)
        return True

    def pending_face_value(self, sender: bytes) -> int:
        """Total face value of this sender's winning tickets not yet redeemed or dropped."""
        return self._pending.get(sender, 0)

    def process(self, now: ChainView, limit: int | None = None) -> list[RedemptionRecord]:
        """Try the pending tickets that are due (up to `limit` changes); return the records that
        changed."""
        changed: list[RedemptionRecord] = []
        for record in self._store.pending():
            if limit is not None and len(changed) >= limit:
                break
            new = self._step(record, now)
            if new is not None:
                self._store.update(new)
                if new.state is not RedemptionState.PENDING:
                    self._count(new.winning, -1)
                changed.append(new)
        return changed

    def _step(self, record: RedemptionRecord, now: ChainView) -> RedemptionRecord | None:
        """The record's next state at `now`, or None when it must keep waiting."""
        ticket = record.winning.ticket
        if now.round >= ticket.creation_round + self._config.validity_rounds:
            return replace(record, state=RedemptionState.EXPIRED, last_error="ticket expired")
        if record.winning.expiration_block > now.block or record.retry_at_block > now.block:
            return None  # params still live (revealing the rand now would leak), or backing off
        if not self.is_profitable(record.winning, now):
            return None  # gas may fall before the ticket expires
        try:
            receipt = self._chain.redeem(ticket, record.winning.sig, record.winning.recipient_rand)
        except TicketAlreadyRedeemed as exc:
            return replace(record, state=RedemptionState.ALREADY_REDEEMED, last_error=str(exc))
        except RedemptionFailed as exc:
            failed = replace(record, attempts=record.attempts + 1, last_error=str(exc))
            if not exc.retryable:
                return replace(failed, state=RedemptionState.FAILED)
            return replace(failed, retry_at_block=now.block + self._config.retry_backoff_blocks)
        return replace(
            record,
            state=RedemptionState.REDEEMED,
            attempts=record.attempts + 1,
            tx_hash=receipt.tx_hash,
            redeemed_block=receipt.block_number,
        )

    def is_profitable(self, winning: WinningTicket, now: ChainView) -> bool:
        """Whether what the chain would pay now (face value, capped by the sender's deposit plus
        our reserve share) exceeds the redemption's gas cost times the profit multiplier."""
        ticket = winning.ticket
        info = self._funds.sender_info(ticket.sender, self._recipient)
        payout = min(ticket.face_value, info.deposit + reserve_alloc(info, now.pool_size))
        tx_cost = self._config.redeem_gas * now.gas_price
        return payout > tx_cost * self._config.profit_multiplier

    def _count(self, winning: WinningTicket, sign: int) -> None:
        sender = winning.ticket.sender
        total = self._pending.get(sender, 0) + sign * winning.ticket.face_value
        if total:
            self._pending[sender] = total
        else:
            self._pending.pop(sender, None)
