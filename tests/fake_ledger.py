"""A fast in-memory `Ledger` for tests only (payments.fakes.FakeChain plus bonded stake): for a
test whose subject is not the chain and that would otherwise wait on it. It passes the same
interface suite as the real ledger (tests/test_ledger_suite.py); the product runs on
`node.chain_ledger.ChainLedger`."""

from __future__ import annotations

import threading

from events.crypto import keccak256
from node.ledger import ChainLog
from payments.fakes import FakeChain
from payments.interfaces import ChainView, RedeemReceipt, SenderInfo
from payments.ticket import Ticket


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
