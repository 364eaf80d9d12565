"""What the node needs of the chain, as one small interface: the current view (block, round, gas
price), sender funds, ticket redemption, and the operations a demo or testnet sets up with
(funding a sender, bonding stake, mining blocks). `FakeLedger` keeps it in memory on payments'
FakeChain until the embedded EVM client is wired in; both are blocking (call them in a thread)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

from events.crypto import keccak256
from payments.fakes import FakeChain
from payments.interfaces import ChainView, RedeemReceipt, SenderInfo
from payments.ticket import Ticket


@dataclass(frozen=True, slots=True)
class ChainLog:
    """Where a chain action landed, for the ChainObserved event that records it."""

    block_number: int
    block_hash: bytes
    tx_hash: bytes
    log_index: int = 0


class Ledger(Protocol):
    """Blocking chain access; implementations are thread-safe."""

    def view(self) -> ChainView: ...
    def sender_info(self, sender: bytes, claimant: bytes) -> SenderInfo: ...
    def redeem(self, ticket: Ticket, sig: bytes, recipient_rand: int) -> RedeemReceipt: ...
    def fund(self, sender: bytes, deposit: int, reserve: int) -> tuple[ChainLog, ChainLog]: ...
    def bond(self, delegator: bytes, orchestrator: bytes, amount: int) -> ChainLog: ...
    def reward(self, orchestrator: bytes) -> tuple[ChainLog, int] | None: ...
    def stake(self, orchestrator: bytes) -> int: ...
    def bonded(self, delegator: bytes) -> int: ...
    def mine(self, blocks: int) -> None: ...
    def paid(self, recipient: bytes) -> int: ...


class FakeLedger:
    """payments.fakes.FakeChain behind the Ledger interface, plus bonded stake in memory."""

    def __init__(self, pool_size: int = 1) -> None:
        self._chain = FakeChain()
        self._chain.block = 1
        self._chain.round = 1
        self._chain.pool_size = pool_size
        self._stakes: dict[bytes, int] = {}
        self._bonded: dict[bytes, int] = {}
        self._lock = threading.Lock()
        self.kind = "in-memory fake (payments.fakes.FakeChain)"

    def view(self) -> ChainView:
        with self._lock:
            c = self._chain
            return ChainView(block=c.block, round=c.round, pool_size=c.pool_size)

    def sender_info(self, sender: bytes, claimant: bytes) -> SenderInfo:
        with self._lock:
            return self._chain.sender_info(sender, claimant)

    def redeem(self, ticket: Ticket, sig: bytes, recipient_rand: int) -> RedeemReceipt:
        with self._lock:
            # FakeChain mines a block per redemption; here blocks advance only by `mine` (the
            # demo) or with the wall clock (`castnet run`), or a busy redeemer's clock would run
            # ahead of its peers' and its own fresh ticket params would look expired
            block = self._chain.block
            try:
                return self._chain.redeem(ticket, sig, recipient_rand)
            finally:
                self._chain.block = block

    def fund(self, sender: bytes, deposit: int, reserve: int) -> tuple[ChainLog, ChainLog]:
        """Deposit and reserve in one transaction: two logs."""
        with self._lock:
            self._chain.fund(sender, deposit, reserve)
            log = self._next_log(b"fund" + sender)
            return log, ChainLog(log.block_number, log.block_hash, log.tx_hash, 1)

    def bond(self, delegator: bytes, orchestrator: bytes, amount: int) -> ChainLog:
        with self._lock:
            self._stakes[orchestrator] = self._stakes.get(orchestrator, 0) + amount
            self._bonded[delegator] = self._bonded.get(delegator, 0) + amount
            return self._next_log(b"bond" + delegator + orchestrator)

    def reward(self, orchestrator: bytes) -> tuple[ChainLog, int] | None:
        """The fake mints nothing: rewards exist only on the contracts."""
        return None

    def _next_log(self, what: bytes) -> ChainLog:
        self._chain.block += 1
        block = self._chain.block
        block_hash = keccak256(b"fake-block%d" % block)
        return ChainLog(block, block_hash, keccak256(block_hash + what))

    def stake(self, orchestrator: bytes) -> int:
        with self._lock:
            return self._stakes.get(orchestrator, 0)

    def bonded(self, delegator: bytes) -> int:
        with self._lock:
            return self._bonded.get(delegator, 0)

    def mine(self, blocks: int) -> None:
        with self._lock:
            self._chain.block += blocks

    def paid(self, recipient: bytes) -> int:
        with self._lock:
            return self._chain.paid.get(recipient, 0)
