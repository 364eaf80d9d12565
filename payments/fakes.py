"""In-memory implementations of the payments interfaces, for tests and for a node run without a
chain or a database: `MemoryTicketStore` (a TicketStore) and `FakeChain` (SenderFunds and a
ChainBroker that checks tickets the way the TicketBroker does)."""

from __future__ import annotations

from dataclasses import dataclass, field

from events.crypto import ZERO_ADDRESS, keccak256
from payments.errors import PaymentError, RedemptionFailed, TicketAlreadyRedeemed
from payments.funds import reserve_alloc
from payments.interfaces import RedeemReceipt, RedemptionRecord, RedemptionState, SenderInfo
from payments.queue import DEFAULT_VALIDITY_ROUNDS
from payments.ticket import Ticket, is_winning, rand_hash, verify_ticket_signature


class MemoryTicketStore:
    """A TicketStore in a dict (insertion-ordered): durable only as long as the process."""

    def __init__(self) -> None:
        self._records: dict[bytes, RedemptionRecord] = {}

    def add(self, record: RedemptionRecord) -> bool:
        if record.ticket_hash in self._records:
            return False
        self._records[record.ticket_hash] = record
        return True

    def update(self, record: RedemptionRecord) -> None:
        if record.ticket_hash not in self._records:
            raise KeyError(record.ticket_hash.hex())
        self._records[record.ticket_hash] = record

    def get(self, ticket_hash: bytes) -> RedemptionRecord | None:
        return self._records.get(ticket_hash)

    def pending(self) -> list[RedemptionRecord]:
        return [r for r in self._records.values() if r.state is RedemptionState.PENDING]


@dataclass
class _Account:
    deposit: int = 0
    reserve: int = 0
    withdraw_round: int = 0
    claimed_in_round: int = 0
    claimed: dict[bytes, int] = field(default_factory=dict)


class FakeChain:
    """A TicketBroker in memory: sender deposits and reserves, used-ticket replay protection,
    the win and expiry checks, payouts per recipient. Set `round`, `block` and `pool_size` as
    the test's chain advances; `fail_next` queues errors that the next redeems raise."""

    def __init__(self, validity_rounds: int = DEFAULT_VALIDITY_ROUNDS) -> None:
        self.round = 0
        self.block = 0
        self.pool_size = 1
        self.validity_rounds = validity_rounds
        self.round_block_hashes: dict[int, bytes] = {}
        self.paid: dict[bytes, int] = {}
        self.redeem_calls: list[bytes] = []  # ticket hash of every call, failed ones included
        self._accounts: dict[bytes, _Account] = {}
        self._used: set[bytes] = set()
        self._failures: list[RedemptionFailed] = []

    def fund(self, sender: bytes, deposit: int = 0, reserve: int = 0) -> None:
        account = self._accounts.setdefault(sender, _Account())
        account.deposit += deposit
        account.reserve += reserve

    def unlock(self, sender: bytes, withdraw_round: int) -> None:
        self._accounts.setdefault(sender, _Account()).withdraw_round = withdraw_round

    def fail_next(self, error: RedemptionFailed) -> None:
        self._failures.append(error)

    def is_used(self, ticket_hash: bytes) -> bool:
        return ticket_hash in self._used

    def sender_info(self, sender: bytes, claimant: bytes) -> SenderInfo:
        account = self._accounts.get(sender, _Account())
        return SenderInfo(
            deposit=account.deposit,
            reserve=account.reserve,
            withdraw_round=account.withdraw_round,
            reserve_claimed_in_round=account.claimed_in_round,
            claimed_by_recipient=account.claimed.get(claimant, 0),
        )

    def redeem(self, ticket: Ticket, sig: bytes, recipient_rand: int) -> RedeemReceipt:
        ticket_hash = ticket.hash()
        self.redeem_calls.append(ticket_hash)
        if self._failures:
            raise self._failures.pop(0)
        if ticket_hash in self._used:
            raise TicketAlreadyRedeemed(f"ticket {ticket_hash.hex()[:16]} is already used")
        self._check(ticket, ticket_hash, sig, recipient_rand)
        self._used.add(ticket_hash)
        self._pay(ticket)
        self.block += 1
        return RedeemReceipt(keccak256(b"fake-tx" + ticket_hash), self.block)

    def _check(self, ticket: Ticket, ticket_hash: bytes, sig: bytes, recipient_rand: int) -> None:
        """The TicketBroker's requires, each a non-retryable failure."""

        def refuse(reason: str) -> RedemptionFailed:
            return RedemptionFailed(f"ticket {ticket_hash.hex()[:16]}: {reason}", retryable=False)

        if ticket.recipient == ZERO_ADDRESS:
            raise refuse("ticket recipient is null address")
        if rand_hash(recipient_rand) != ticket.recipient_rand_hash:
            raise refuse("recipientRand does not match recipientRandHash")
        if ticket.creation_round + self.validity_rounds <= self.round:
            raise refuse("ticket is expired")
        known = self.round_block_hashes.get(ticket.creation_round)
        if known is not None and known != ticket.creation_round_block_hash:
            raise refuse("ticket creationRound blockHash invalid")
        try:
            verify_ticket_signature(ticket_hash, sig, ticket.sender)
        except PaymentError as exc:
            raise refuse(f"invalid signature over ticket hash: {exc}") from None
        if not is_winning(sig, recipient_rand, ticket.win_prob):
            raise refuse("ticket did not win")

    def _pay(self, ticket: Ticket) -> None:
        """Face value from the deposit, the rest from the recipient's share of the reserve."""
        account = self._accounts.setdefault(ticket.sender, _Account())
        from_deposit = min(ticket.face_value, account.deposit)
        account.deposit -= from_deposit
        info = self.sender_info(ticket.sender, ticket.recipient)
        from_reserve = min(ticket.face_value - from_deposit, reserve_alloc(info, self.pool_size))
        account.reserve -= from_reserve
        account.claimed_in_round += from_reserve
        account.claimed[ticket.recipient] = account.claimed.get(ticket.recipient, 0) + from_reserve
        self.paid[ticket.recipient] = (
            self.paid.get(ticket.recipient, 0) + from_deposit + from_reserve
        )
