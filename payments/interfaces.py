"""What payments needs from the world, as values and small Protocols: a snapshot of the chain
(passed in, never read from a clock), sender funds, the ticket broker, and a durable ticket store.
In-memory implementations live in `payments.fakes`."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from payments.ticket import ZERO_HASH, Ticket, WinningTicket


@dataclass(frozen=True, slots=True)
class ChainView:
    """The chain as the caller last saw it: block number, current round and the block hash that
    initialized it, gas price (wei), and the size of the active orchestrator pool."""

    block: int
    round: int = 0
    round_block_hash: bytes = ZERO_HASH
    gas_price: int = 0
    pool_size: int = 1


@dataclass(frozen=True, slots=True)
class SenderInfo:
    """A sender's TicketBroker funds as seen by one claimant (recipient), all in wei.
    `withdraw_round` is 0 while the funds are not unlocking."""

    deposit: int
    reserve: int
    withdraw_round: int = 0
    reserve_claimed_in_round: int = 0
    claimed_by_recipient: int = 0


@dataclass(frozen=True, slots=True)
class RedeemReceipt:
    """A confirmed redemption: the transaction and the block it landed in."""

    tx_hash: bytes
    block_number: int


class RedemptionState(enum.Enum):
    PENDING = "pending"
    REDEEMED = "redeemed"
    ALREADY_REDEEMED = "already_redeemed"  # the chain had paid it before we asked
    EXPIRED = "expired"
    FAILED = "failed"  # a non-retryable chain refusal


@dataclass(frozen=True, slots=True)
class RedemptionRecord:
    """A winning ticket's place in the redemption queue, as the store keeps it."""

    winning: WinningTicket
    ticket_hash: bytes
    state: RedemptionState = RedemptionState.PENDING
    attempts: int = 0
    last_error: str = ""
    retry_at_block: int = 0
    tx_hash: bytes = b""
    redeemed_block: int = 0


class SenderFunds(Protocol):
    """Looks up a sender's deposit and reserve (a chain client, usually cached)."""

    def sender_info(self, sender: bytes, claimant: bytes) -> SenderInfo: ...


class ChainBroker(Protocol):
    """Submits a winning ticket to the TicketBroker and waits for it to confirm.

    Raises `TicketAlreadyRedeemed` when the chain has already paid the ticket, and
    `RedemptionFailed(retryable=...)` for any other failure (including transport errors)."""

    def redeem(self, ticket: Ticket, sig: bytes, recipient_rand: int) -> RedeemReceipt: ...


class TicketStore(Protocol):
    """Durable home of winning tickets; every call returns only once its change is durable."""

    def add(self, record: RedemptionRecord) -> bool:
        """Insert unless a record with this ticket hash exists; True if inserted."""
        ...

    def update(self, record: RedemptionRecord) -> None:
        """Replace the stored record with the same ticket hash (KeyError if none)."""
        ...

    def get(self, ticket_hash: bytes) -> RedemptionRecord | None: ...

    def pending(self) -> list[RedemptionRecord]:
        """Records in state PENDING, oldest first."""
        ...
