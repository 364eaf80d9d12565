"""The web3 client of castnet's protocol contracts (blocking: call it from a thread).

    chain = Chain.embedded()                         # in-process EVM: eth-tester on py-evm
    chain = Chain.rpc("http://127.0.0.1:8545", funder_key)   # any JSON-RPC node (anvil)
    protocol = deploy_protocol(chain, chain.dev_key, ProtocolParams(round_length=20))
    Protocol.at(chain, protocol.addresses())         # the same contracts, from their addresses
    chain.transfer(chain.dev_key, sender_address, 10**18)    # gas money
    protocol.staking.bond(...); protocol.staking.reward(...) # chain.staking: token and bonding
    protocol.fund_deposit_and_reserve(sender_key, deposit, reserve)
    protocol.initialize_round(key)                   # once per round, by anyone
    protocol.redeem(recipient_key, ticket, sig, recipient_rand)  # -> RedeemReceipt
    protocol.sender_info(sender, claimant); protocol.view()       # payments' SenderInfo/ChainView

Both backends take the same path: transactions are signed locally (eth-account) with nonces
owned here, sent raw with explicit gas, and receipts polled. Each transaction is first run as a
call, so a revert surfaces as a specific `chain.errors.Reverted` with the contract's reason.
"""

from __future__ import annotations

import ast
import contextlib
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eth_account import Account
from web3 import EthereumTesterProvider, HTTPProvider, Web3

from chain.compile import load_artifact
from chain.errors import ChainError, Reverted, reverted
from chain.staking import Staking
from payments.interfaces import ChainView, RedeemReceipt, SenderInfo
from payments.ticket import Ticket

if TYPE_CHECKING:
    from eth_tester import EthereumTester

DEPLOY_GAS = 6_000_000
TX_GAS = 300_000
RECEIPT_TIMEOUT_S = 60.0
POLL_S = 0.01
_PREFIXES = ("execution reverted: ", "execution reverted:", "VM Exception while processing "
             "transaction: revert ", "revert ")  # fmt: skip


def _reason(exc: BaseException) -> str:
    """The revert string inside a web3/eth-tester error message."""
    text = str(exc.args[0]) if exc.args else str(exc)
    detail = exc.args[0] if exc.args else None
    if isinstance(detail, str) and detail.startswith("{") and "message" in detail:
        with contextlib.suppress(ValueError, SyntaxError):  # a JSON-RPC error object as a dict
            detail = ast.literal_eval(detail)
    if isinstance(detail, dict):
        text = str(detail.get("message", text))
    for prefix in _PREFIXES:
        if prefix in text:
            text = text.split(prefix, 1)[1]
    return text.strip().strip("'\"") or "reverted without a reason"


_NODE_REFUSALS = ("insufficient funds", "nonce too low", "nonce too high", "intrinsic gas")


def _refused(exc: BaseException, what: str) -> ChainError:
    """A contract's revert, or the node refusing the transaction itself (no funds for gas...)."""
    reason = _reason(exc)
    if any(r in reason.lower() for r in _NODE_REFUSALS):
        return ChainError(f"{what}: the node refused the transaction: {reason}")
    return reverted(reason, what)


class Chain:
    """One connection and the one place that assigns nonces to our accounts."""

    def __init__(self, w3: Web3, dev_key: bytes, tester: EthereumTester | None = None) -> None:
        self.w3 = w3
        self.dev_key = dev_key
        self.tester = tester
        self.chain_id = w3.eth.chain_id
        self._nonces: dict[str, int] = {}
        self.lock = threading.RLock()  # eth-tester is not thread-safe: one call at a time
        self.kind = "embedded EVM (eth-tester, py-evm)" if tester else "JSON-RPC"

    @classmethod
    def embedded(cls) -> Chain:
        # py-evm is imported here, not at the top: a node on JSON-RPC (anvil) starts without it
        from eth_tester import EthereumTester, PyEVMBackend

        tester = EthereumTester(PyEVMBackend())
        w3 = Web3(EthereumTesterProvider(tester))
        key = tester.backend.account_keys[0].to_bytes()
        return cls(w3, key, tester)

    @classmethod
    def rpc(cls, url: str, dev_key: bytes) -> Chain:
        w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": 30}))
        try:
            w3.eth.chain_id  # noqa: B018 - reachability check
        except Exception as exc:
            raise ChainError(f"cannot reach the chain at {url}: {exc}") from None
        chain = cls(w3, dev_key)
        chain.kind = f"JSON-RPC {url}"
        return chain

    # -- reading ---------------------------------------------------------------------------

    def block_number(self) -> int:
        return int(self.w3.eth.block_number)

    def balance(self, address: bytes) -> int:
        return int(self.w3.eth.get_balance(Web3.to_checksum_address(address)))

    def mine(self, blocks: int) -> None:
        """Advance the chain by empty blocks (embedded EVM or anvil)."""
        if blocks <= 0:
            return
        with self.lock:
            if self.tester is not None:
                self.tester.mine_blocks(blocks)
            else:
                self.w3.provider.make_request("anvil_mine", [hex(blocks)])  # type: ignore[arg-type]

    # -- writing ---------------------------------------------------------------------------

    def send(
        self,
        key: bytes,
        to: str | None,
        data: bytes | str,
        value: int = 0,
        gas: int = TX_GAS,
        what: str = "transaction",
    ) -> Any:
        """Sign, send and wait for one transaction; a revert raises its specific error."""
        sender = Account.from_key(key).address
        tx: dict[str, Any] = {"from": sender, "data": data, "value": value, "gas": gas,
                              "chainId": self.chain_id}  # fmt: skip
        if to is not None:
            tx["to"] = to
        with self.lock:
            try:
                # a revert shows its reason here, before any gas is spent; "pending" runs it in
                # the block the transaction will land in (a round may turn at that block)
                self.w3.eth.call(tx, "pending")
            except Exception as exc:
                raise _refused(exc, what) from None
            tx["gasPrice"] = self.w3.eth.gas_price
            tx["nonce"] = self._next_nonce(sender)
            signed = Account.sign_transaction(tx, key)
            try:
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except Exception as exc:  # the node refused it: nonce, funds for gas, ...
                self._nonces.pop(sender, None)  # ask the chain again next time
                raise _refused(exc, what) from None
            self._nonces[sender] = tx["nonce"] + 1
        receipt = self._wait(tx_hash)
        if receipt["status"] != 1:
            if int(receipt["gasUsed"]) >= gas:
                raise ChainError(f"{what} ran out of gas (limit {gas:,})")
            raise reverted("reverted without a reason", what)
        return receipt

    def _next_nonce(self, sender: str) -> int:
        if sender not in self._nonces:
            self._nonces[sender] = int(self.w3.eth.get_transaction_count(sender, "pending"))
        return self._nonces[sender]

    def _wait(self, tx_hash: bytes) -> Any:
        deadline = time.monotonic() + RECEIPT_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                return self.w3.eth.get_transaction_receipt(tx_hash)
            except Exception:  # not mined yet
                time.sleep(POLL_S)
        raise ChainError(f"transaction {tx_hash.hex()} not mined in {RECEIPT_TIMEOUT_S:g} s")

    def transfer(self, key: bytes, to: bytes, wei: int) -> Any:
        return self.send(key, Web3.to_checksum_address(to), b"", wei, 21_000, "transfer")

    def deploy(self, key: bytes, name: str, *args: Any) -> str:
        artifact = load_artifact(name)
        factory = self.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        data = factory.constructor(*args).build_transaction({"gas": DEPLOY_GAS, "gasPrice": 0})
        receipt = self.send(key, None, data["data"], 0, DEPLOY_GAS, f"deploy {name}")
        return str(receipt["contractAddress"])

    def contract(self, name: str, address: str) -> Any:
        return self.w3.eth.contract(address=address, abi=load_artifact(name)["abi"])


@dataclass(frozen=True)
class ProtocolParams:
    round_length: int = 20  # blocks
    pool_size: int = 1  # reserve shares until bonding sets it to the active set's size
    ticket_validity_rounds: int = 2
    unlock_period_rounds: int = 2
    unbonding_period_rounds: int = 2
    max_active: int = 10  # orchestrators in the active set
    # the minter, in parts per billion, as Livepeer's: inflation starts at 0.05% of the supply per
    # round (Livepeer's rate in mid-2020) and moves by 0.00005% (LIP-34) each round toward 50%
    # of the supply bonded
    inflation_ppb: int = 500_000
    inflation_change_ppb: int = 500
    target_bonding_rate_ppb: int = 500_000_000
    genesis_supply: int = 10**27  # stake token given to the deployer


CONTRACTS = ("Rounds", "TicketBroker", "StakeToken", "Bonding")


class Protocol:
    """The deployed contracts with typed calls; implements payments' ChainBroker and
    SenderFunds for one redeeming account (`for_recipient`)."""

    def __init__(self, chain: Chain, addresses: dict[str, str]) -> None:
        missing = [name for name in CONTRACTS if name not in addresses]
        if missing:
            raise ChainError(f"contract addresses lack {', '.join(missing)}")
        self.chain = chain
        self.rounds = chain.contract("Rounds", addresses["Rounds"])
        self.broker = chain.contract("TicketBroker", addresses["TicketBroker"])
        self.token = chain.contract("StakeToken", addresses["StakeToken"])
        self.bonding = chain.contract("Bonding", addresses["Bonding"])
        self.staking = Staking(self)

    @classmethod
    def at(cls, chain: Chain, addresses: dict[str, str]) -> Protocol:
        """The contracts at `addresses` (as `addresses()` gives them), checked to hold code."""
        for name in CONTRACTS:
            address = addresses.get(name, "")
            if not Web3.is_address(address) or not chain.w3.eth.get_code(
                Web3.to_checksum_address(address)
            ):
                raise ChainError(f"no {name} contract at {address or '(none)'} on {chain.kind}")
        return cls(chain, {name: Web3.to_checksum_address(addresses[name]) for name in CONTRACTS})

    def addresses(self) -> dict[str, str]:
        return {"Rounds": self.rounds.address, "TicketBroker": self.broker.address,
                "StakeToken": self.token.address, "Bonding": self.bonding.address}  # fmt: skip

    def _tx(self, key: bytes, fn: Any, value: int = 0, gas: int = TX_GAS, what: str = "") -> Any:
        data = fn.build_transaction({"gas": gas, "gasPrice": 0, "value": value})["data"]
        return self.chain.send(key, fn.address, data, value, gas, what or fn.fn_name)

    # -- rounds ----------------------------------------------------------------------------

    def current_round(self) -> int:
        return int(self.rounds.functions.currentRound().call())

    def round_initialized(self) -> bool:
        """Whether the round of the next block (where a transaction sent now lands) is."""
        fn = self.rounds.functions.currentRoundInitialized()
        return bool(fn.call(block_identifier="pending"))

    def initialize_round(self, key: bytes) -> Any:
        return self._tx(key, self.rounds.functions.initializeRound())

    def ensure_round(self, key: bytes) -> None:
        """Initialize the current round unless it is; another account doing it first is fine."""
        for attempt in range(3):
            if self.round_initialized():
                return
            try:
                self.initialize_round(key)
                return
            except Reverted:  # lost a race to initialize it, or the round turned meanwhile
                if attempt == 2:
                    raise

    def view(self) -> ChainView:
        """The chain as ticket params see it; the contract state in one call (the broker's
        `roundView`), not three."""
        current, block_hash, pool_size = self.broker.functions.roundView().call()
        return ChainView(block=self.chain.block_number(), round=int(current),
                         round_block_hash=bytes(block_hash),
                         gas_price=int(self.chain.w3.eth.gas_price),
                         pool_size=int(pool_size))  # fmt: skip

    # -- ticket broker ---------------------------------------------------------------------

    def fund_deposit_and_reserve(self, key: bytes, deposit: int, reserve: int) -> Any:
        fn = self.broker.functions.fundDepositAndReserve(deposit, reserve)
        return self._tx(key, fn, deposit + reserve)

    def fund_deposit(self, key: bytes, wei: int) -> Any:
        return self._tx(key, self.broker.functions.fundDeposit(), wei)

    def fund_reserve(self, key: bytes, wei: int) -> Any:
        return self._tx(key, self.broker.functions.fundReserve(), wei)

    def unlock(self, key: bytes) -> Any:
        return self._tx(key, self.broker.functions.unlock())

    def cancel_unlock(self, key: bytes) -> Any:
        return self._tx(key, self.broker.functions.cancelUnlock())

    def withdraw(self, key: bytes) -> Any:
        return self._tx(key, self.broker.functions.withdraw())

    def sender_info(self, sender: bytes, claimant: bytes) -> SenderInfo:
        """One call (the broker's `senderInfo`, all at the current round), not six: on the
        embedded EVM ~90 ms -> ~20 ms for a sender seen the first time."""
        s, c = Web3.to_checksum_address(sender), Web3.to_checksum_address(claimant)
        info = self.broker.functions.senderInfo(s, c).call()
        deposit, reserve, withdraw_round, claimed, claimed_by = info
        return SenderInfo(
            deposit=int(deposit),
            reserve=int(reserve),
            withdraw_round=int(withdraw_round),
            reserve_claimed_in_round=int(claimed),
            claimed_by_recipient=int(claimed_by),
        )

    def is_used(self, ticket_hash: bytes) -> bool:
        return bool(self.broker.functions.usedTickets(ticket_hash).call())

    def redeem(self, key: bytes, ticket: Ticket, sig: bytes, recipient_rand: int) -> RedeemReceipt:
        fn = self.broker.functions.redeemWinningTicket(_ticket_tuple(ticket), sig, recipient_rand)
        receipt = self._tx(key, fn, what="redeemWinningTicket")
        return RedeemReceipt(bytes(receipt["transactionHash"]), int(receipt["blockNumber"]))

    def for_recipient(self, key: bytes) -> RecipientBroker:
        return RecipientBroker(self, key)


class RecipientBroker:
    """payments' ChainBroker + SenderFunds for one recipient's account."""

    def __init__(self, protocol: Protocol, key: bytes) -> None:
        self.protocol = protocol
        self.key = key

    def sender_info(self, sender: bytes, claimant: bytes) -> SenderInfo:
        return self.protocol.sender_info(sender, claimant)

    def redeem(self, ticket: Ticket, sig: bytes, recipient_rand: int) -> RedeemReceipt:
        return self.protocol.redeem(self.key, ticket, sig, recipient_rand)


def _ticket_tuple(t: Ticket) -> tuple[Any, ...]:
    return (Web3.to_checksum_address(t.recipient), Web3.to_checksum_address(t.sender),
            t.face_value, t.win_prob, t.sender_nonce, t.recipient_rand_hash, t.creation_round,
            t.creation_round_block_hash)  # fmt: skip


def deploy_protocol(chain: Chain, key: bytes, params: ProtocolParams | None = None) -> Protocol:
    """Deploy every contract, wired together (bonding mints the token and receives the broker's
    fees); `key` gets the token's genesis supply. Returns the typed client."""
    p = params or ProtocolParams()
    rounds = chain.deploy(key, "Rounds", p.round_length)
    token = chain.deploy(key, "StakeToken", p.genesis_supply)
    broker = chain.deploy(key, "TicketBroker", rounds, p.pool_size, p.ticket_validity_rounds,
                          p.unlock_period_rounds)  # fmt: skip
    bonding = chain.deploy(key, "Bonding", rounds, token, broker, p.unbonding_period_rounds,
                           p.max_active, p.inflation_ppb, p.inflation_change_ppb,
                           p.target_bonding_rate_ppb)  # fmt: skip
    protocol = Protocol(chain, {"Rounds": rounds, "TicketBroker": broker, "StakeToken": token,
                                "Bonding": bonding})  # fmt: skip
    protocol._tx(key, protocol.token.functions.setMinter(bonding))
    protocol._tx(key, protocol.broker.functions.setFeeSink(bonding))
    protocol._tx(key, protocol.rounds.functions.setBonding(bonding))
    return protocol
