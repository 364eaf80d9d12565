"""The node's `Ledger` on the real contracts (chain.client): rounds, deposits, reserves, stake,
rewards and ticket redemption are transactions on an EVM (the embedded one by default). The
ledger signs for the accounts whose keys it was given (the demo holds every member's key); the
deployer's key funds them with gas money and stake token."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from web3.logs import DISCARD

from chain.client import Chain, Protocol, ProtocolParams, deploy_protocol
from chain.errors import ChainError, Reverted, TicketUsed
from chain.staking import MinterInfo
from events.crypto import LocalKeySigner
from node.ledger import ChainLog
from payments.errors import RedemptionFailed, TicketAlreadyRedeemed
from payments.interfaces import ChainView, RedeemReceipt, SenderInfo
from payments.ticket import Ticket

GAS_MONEY = 10**20  # wei sent to every account the ledger signs for (embedded chain)
STAKE_GRANT = 1_000 * 10**18  # stake token given to each of them
REWARD_CUT, FEE_SHARE = 100_000, 500_000  # parts per million: what self-bonded orchestrators ask
ROUND_TURNED = ("current round is not initialized", "reverted without a reason")


class ChainLedger:
    """Blocking and thread-safe (the chain client serializes transactions)."""

    def __init__(
        self,
        protocol: Protocol,
        keys: Iterable[bytes],
        grant: bool = True,
        stake_grants: Mapping[bytes, int] | None = None,
    ) -> None:
        """With `grant`, the deployer funds every account with gas money and stake token (a
        fresh embedded chain): `stake_grants[address]` wei of it where given, else
        STAKE_GRANT; on a shared chain the accounts were funded beforehand."""
        self.protocol = protocol
        self.chain = protocol.chain
        self._keys = {LocalKeySigner(key).address: key for key in keys}
        # what was read at a block, reused while the chain's head is that block (a state read is
        # fixed once its block is): every segment reads the view and each ticket its sender
        self._read_at: tuple[int, dict[Any, Any]] = (-1, {})
        for address in self._keys if grant else ():
            self.chain.transfer(self.chain.dev_key, address, GAS_MONEY)
            tokens = STAKE_GRANT if stake_grants is None else stake_grants.get(address, 0)
            if tokens:
                protocol.staking.transfer_tokens(self.chain.dev_key, address, tokens)
        protocol.ensure_round(self.chain.dev_key)
        self.kind = f"{self.chain.kind}: Rounds, TicketBroker, StakeToken, Bonding contracts"

    @classmethod
    def embedded(
        cls,
        keys: Iterable[bytes],
        params: ProtocolParams | None = None,
        stake_grants: Mapping[bytes, int] | None = None,
    ) -> ChainLedger:
        chain = Chain.embedded()
        return cls(deploy_protocol(chain, chain.dev_key, params), keys, stake_grants=stake_grants)

    @classmethod
    def connect(cls, url: str, contracts_file: Path, keys: Sequence[bytes]) -> ChainLedger:
        """The contracts of a deployment file on a JSON-RPC chain; the first key initializes
        rounds when nobody has."""
        try:
            document = json.loads(contracts_file.read_text())
            addresses = document.get("contracts", document)
            if not isinstance(addresses, dict):
                raise ValueError("no contract addresses")
        except (OSError, ValueError, AttributeError) as exc:
            raise ChainError(f"{contracts_file}: not a castnet deployment file: {exc}") from None
        chain = Chain.rpc(url, keys[0])
        return cls(Protocol.at(chain, addresses), keys, grant=False)

    def _key(self, address: bytes, what: str) -> bytes:
        try:
            return self._keys[address]
        except KeyError:
            raise ChainError(f"no key for 0x{address.hex()} to {what}") from None

    def view(self) -> ChainView:
        """The chain now, its round initialized first (anyone may): ticket params must carry the
        round's recorded block hash, not the zero hash of a round nobody has initialized."""
        with self.chain.lock:
            cached = self._at_head().get("view")
            if cached is not None:
                return cached
            self.protocol.ensure_round(self.chain.dev_key)  # may add a block
            view = self.protocol.view()
            self._at_head()["view"] = view
            return view

    def sender_info(self, sender: bytes, claimant: bytes) -> SenderInfo:
        with self.chain.lock:
            reads = self._at_head()
            key = ("sender", sender, claimant)
            if key not in reads:
                reads[key] = self.protocol.sender_info(sender, claimant)
            return reads[key]

    def _at_head(self) -> dict[Any, Any]:
        """The reads cached at the chain's current head block (call under the chain's lock)."""
        block = self.chain.block_number()
        if self._read_at[0] != block:
            self._read_at = (block, {})
        return self._read_at[1]

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
        """Bond `amount` of the delegator's stake token to `orchestrator`; a self-bond
        registers the orchestrator. The ChainLog is the Bond event's."""
        key, staking = self._key(delegator, "bond"), self.protocol.staking
        with self.chain.lock:
            receipt = staking.bond(key, amount, orchestrator)
            if delegator == orchestrator and not staking.orchestrator(orchestrator).registered:
                staking.register(key, REWARD_CUT, FEE_SHARE)
        (bond,) = self.protocol.bonding.events.Bond().process_receipt(receipt, errors=DISCARD)
        return _log(receipt, bond)

    def reward(self, orchestrator: bytes) -> tuple[ChainLog, int] | None:
        """Claim this round's reward for `orchestrator`: the Reward log and the amount minted,
        or None when it has nothing to claim (already rewarded, or not active)."""
        key, staking = self._key(orchestrator, "reward"), self.protocol.staking
        with self.chain.lock:
            self.protocol.ensure_round(self.chain.dev_key)
            info = staking.orchestrator(orchestrator)
            if not info.active or info.last_reward_round >= self.protocol.current_round():
                return None
            try:
                receipt = staking.reward(key)
            except Reverted as exc:
                if exc.reason not in ROUND_TURNED:
                    raise
                self.protocol.ensure_round(self.chain.dev_key)
                receipt = staking.reward(key)
        (entry,) = self.protocol.bonding.events.Reward().process_receipt(receipt, errors=DISCARD)
        return _log(receipt, entry), int(entry["args"]["amount"])

    def stake(self, orchestrator: bytes) -> int:
        with self.chain.lock:
            return self.protocol.staking.stake(orchestrator)

    def bonded(self, delegator: bytes) -> int:
        """The delegator's bond with the rewards it has earned and not yet claimed."""
        with self.chain.lock:
            return self.protocol.staking.delegator(delegator).bonded

    def minter(self, round_: int | None = None) -> MinterInfo:
        """The minter's parameters and what it fixed for `round_` (default: the current one)."""
        with self.chain.lock:
            return self.protocol.staking.minter(round_)

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
