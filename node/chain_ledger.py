"""The node's `Ledger` on the real contracts (chain.client): rounds, deposits, reserves and ticket
redemption are transactions on an EVM (the embedded one by default). The ledger signs for the
accounts whose keys it was given (the demo holds every member's key). Bonded stake is kept in
memory: the bonding contract is not built yet, so a bond's ChainLog names the block it was
recorded at and a zero transaction hash."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from chain.client import Chain, Protocol, ProtocolParams, deploy_protocol
from chain.errors import ChainError, Reverted, TicketUsed
from events.crypto import LocalKeySigner
from node.ledger import ChainLog
from payments.errors import RedemptionFailed, TicketAlreadyRedeemed
from payments.interfaces import ChainView, RedeemReceipt, SenderInfo
from payments.ticket import Ticket

GAS_MONEY = 10**20  # wei sent to every account the ledger signs for
ROUND_TURNED = ("current round is not initialized", "reverted without a reason")


class ChainLedger:
    """Blocking and thread-safe (the chain client serializes transactions)."""

    def __init__(self, protocol: Protocol, keys: Iterable[bytes]) -> None:
        self.protocol = protocol
        self.chain = protocol.chain
        self._keys = {LocalKeySigner(key).address: key for key in keys}
        for address in self._keys:
            self.chain.transfer(self.chain.dev_key, address, GAS_MONEY)
        protocol.ensure_round(self.chain.dev_key)
        self._stakes: dict[bytes, int] = {}
        self._lock = threading.Lock()
        self.kind = f"{self.chain.kind}: Rounds + TicketBroker contracts (stake kept in memory)"

    @classmethod
    def embedded(cls, keys: Iterable[bytes], params: ProtocolParams | None = None) -> ChainLedger:
        chain = Chain.embedded()
        return cls(deploy_protocol(chain, chain.dev_key, params), keys)

    def _key(self, address: bytes, what: str) -> bytes:
        try:
            return self._keys[address]
        except KeyError:
            raise ChainError(f"no key for 0x{address.hex()} to {what}") from None

    def view(self) -> ChainView:
        with self.chain.lock:
            return self.protocol.view()

    def sender_info(self, sender: bytes, claimant: bytes) -> SenderInfo:
        with self.chain.lock:
            return self.protocol.sender_info(sender, claimant)

    def redeem(self, ticket: Ticket, sig: bytes, recipient_rand: int) -> RedeemReceipt:
        key = self._key(ticket.recipient, "redeem")
        try:
            with self.chain.lock:
                # the transaction lands in the next block, which may open a new round: initialize
                # it first (anyone may), and once more if the round turned under the call
                self.protocol.ensure_round(key)
                try:
                    return self.protocol.redeem(key, ticket, sig, recipient_rand)
                except Reverted as exc:
                    if exc.reason not in ROUND_TURNED:
                        raise
                    self.protocol.ensure_round(key)
                    return self.protocol.redeem(key, ticket, sig, recipient_rand)
        except TicketUsed as exc:
            raise TicketAlreadyRedeemed(str(exc)) from None
        except Reverted as exc:
            raise RedemptionFailed(str(exc), retryable=False) from None
        except ChainError as exc:
            raise RedemptionFailed(str(exc), retryable=True) from None

    def fund(self, sender: bytes, deposit: int, reserve: int) -> tuple[ChainLog, ChainLog]:
        with self.chain.lock:
            receipt = self.protocol.fund_deposit_and_reserve(
                self._key(sender, "fund"), deposit, reserve
            )
        first, second = (_log(receipt, entry) for entry in receipt["logs"][:2])
        return first, second

    def bond(self, delegator: bytes, orchestrator: bytes, amount: int) -> ChainLog:
        with self._lock:
            self._stakes[orchestrator] = self._stakes.get(orchestrator, 0) + amount
        with self.chain.lock:
            block = self.chain.w3.eth.get_block("latest")
        return ChainLog(int(block["number"]), bytes(block["hash"]), bytes(32))

    def stake(self, orchestrator: bytes) -> int:
        with self._lock:
            return self._stakes.get(orchestrator, 0)

    def mine(self, blocks: int) -> None:
        with self.chain.lock:
            self.chain.mine(blocks)
            self.protocol.ensure_round(self.chain.dev_key)

    def paid(self, recipient: bytes) -> int:
        """Wei the broker paid `recipient` for winning tickets (from its logs)."""
        event = self.protocol.broker.events.WinningTicketRedeemed()
        with self.chain.lock:
            logs = event.get_logs(
                from_block=0, argument_filters={"recipient": _checksum(recipient)}
            )
        return sum(int(entry["args"]["paid"]) for entry in logs)


def _checksum(address: bytes) -> str:
    from web3 import Web3

    return Web3.to_checksum_address(address)


def _log(receipt: Any, entry: Any) -> ChainLog:
    return ChainLog(int(receipt["blockNumber"]), bytes(receipt["blockHash"]),
                    bytes(receipt["transactionHash"]), int(entry["logIndex"]))  # fmt: skip
