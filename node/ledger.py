"""What the node needs of the chain, as one small interface: the current view (block, round, gas
price), sender funds, ticket redemption, and the operations a demo or testnet sets up with
(funding a sender, bonding stake, mining blocks). `node.chain_ledger.ChainLedger` implements it on
the protocol contracts (embedded EVM or JSON-RPC); calls block (run them in a thread)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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
