"""Typed calls of the stake token and the bonding contract (blocking: call them from a thread).

staking = protocol.staking
staking.transfer_tokens(dev_key, operator, 10**21)
staking.bond(operator_key, 10**20, operator)        # approves the bonding contract first
staking.register(operator_key, reward_cut=100_000, fee_share=500_000)   # parts per million
staking.bond(delegator_key, 5 * 10**19, operator)   # delegate
staking.reward(operator_key)                        # once per round, active orchestrators
lock = staking.unbond(delegator_key, 10**19)        # -> lock id
staking.withdraw_stake(delegator_key, lock)         # after the unbonding period
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eth_account import Account
from web3 import Web3
from web3.logs import DISCARD

if TYPE_CHECKING:
    from chain.client import Protocol

PPM = 1_000_000
PPB = 1_000_000_000
STAKING_GAS = 1_000_000  # the active set update loops over up to 100 orchestrators


@dataclass(frozen=True, slots=True)
class OrchestratorInfo:
    address: bytes
    registered: bool
    reward_cut: int  # parts per million of a reward kept as commission
    fee_share: int  # parts per million of fees given to the stake
    stake: int  # wei of stake token bonded to it, earnings included
    last_reward_round: int
    active: bool  # in the current round's active set: may call reward()
    in_pool: bool  # in the pool: active from the next round on
    round_stake: int  # stake when the current round started: what this round's reward is on


@dataclass(frozen=True, slots=True)
class UnbondingLock:
    lock_id: int
    amount: int
    withdraw_round: int


@dataclass(frozen=True, slots=True)
class DelegatorInfo:
    address: bytes
    delegate: bytes | None
    bonded: int  # with the earnings not yet claimed
    fees: int  # wei earned and not withdrawn
    locks: tuple[UnbondingLock, ...]
    tokens: int  # unbonded stake token in the account


@dataclass(frozen=True, slots=True)
class MinterInfo:
    """Inflation parameters (parts per billion) and what the minter fixed for one round."""

    round: int
    inflation: int  # now: the rate the next round's adjustment starts from
    inflation_change: int
    target_bonding_rate: int
    fixed: bool  # whether the round's budget is fixed (the round was initialized or touched)
    round_inflation: int
    mintable: int
    minted: int
    active_stake: int
    bonding_rate: int  # the round's active stake, parts per billion of the supply then
    total_supply: int  # now


def _address(value: bytes | str) -> str:
    return Web3.to_checksum_address(value)


class Staking:
    """Stake token and bonding contract calls; transactions go through the protocol's chain."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        self.token = protocol.token
        self.bonding = protocol.bonding

    def _tx(self, key: bytes, fn: Any) -> Any:
        return self.protocol._tx(key, fn, gas=STAKING_GAS)

    # -- token -----------------------------------------------------------------------------

    def token_balance(self, account: bytes) -> int:
        return int(self.token.functions.balanceOf(_address(account)).call())

    def transfer_tokens(self, key: bytes, to: bytes, amount: int) -> Any:
        return self.protocol._tx(key, self.token.functions.transfer(_address(to), amount))

    def _approve(self, key: bytes, owner: bytes, amount: int) -> None:
        spender = self.bonding.address
        if int(self.token.functions.allowance(_address(owner), spender).call()) < amount:
            self.protocol._tx(key, self.token.functions.approve(spender, amount))

    # -- bonding ---------------------------------------------------------------------------

    def bond(self, key: bytes, amount: int, to: bytes) -> Any:
        """Bond `amount` more to `to` (moving any existing bond there)."""
        owner = bytes.fromhex(Account.from_key(key).address[2:])
        if amount > 0:
            self._approve(key, owner, amount)
        return self._tx(key, self.bonding.functions.bond(amount, _address(to)))

    def register(self, key: bytes, reward_cut: int, fee_share: int) -> Any:
        return self._tx(key, self.bonding.functions.register(reward_cut, fee_share))

    def reward(self, key: bytes) -> Any:
        return self._tx(key, self.bonding.functions.reward())

    def unbond(self, key: bytes, amount: int) -> int:
        """Unbond `amount`; returns the id of the lock that holds it."""
        receipt = self._tx(key, self.bonding.functions.unbond(amount))
        (entry,) = self.bonding.events.Unbond().process_receipt(receipt, errors=DISCARD)
        return int(entry["args"]["lockId"])

    def rebond(self, key: bytes, lock_id: int) -> Any:
        return self._tx(key, self.bonding.functions.rebond(lock_id))

    def rebond_from_unbonded(self, key: bytes, to: bytes, lock_id: int) -> Any:
        fn = self.bonding.functions.rebondFromUnbonded(_address(to), lock_id)
        return self._tx(key, fn)

    def withdraw_stake(self, key: bytes, lock_id: int) -> Any:
        return self._tx(key, self.bonding.functions.withdrawStake(lock_id))

    def withdraw_fees(self, key: bytes) -> Any:
        return self._tx(key, self.bonding.functions.withdrawFees())

    # -- reading ---------------------------------------------------------------------------

    def orchestrator(self, address: bytes) -> OrchestratorInfo:
        f = self.bonding.functions
        o = f.orchestrators(_address(address)).call()
        registered, reward_cut, fee_share, stake, last_reward, _epoch = o
        return OrchestratorInfo(address, bool(registered), int(reward_cut), int(fee_share),
                                int(stake), int(last_reward),
                                bool(f.isActive(_address(address)).call()),
                                bool(f.inPool(_address(address)).call()),
                                int(f.roundStake(_address(address)).call()))  # fmt: skip

    def delegator(self, address: bytes) -> DelegatorInfo:
        f, account = self.bonding.functions, _address(address)
        _bonded, delegate, _epoch, _fees, next_lock = f.delegators(account).call()
        locks = []
        for lock_id in range(int(next_lock)):
            amount, withdraw_round = f.locks(account, lock_id).call()
            if amount:
                locks.append(UnbondingLock(lock_id, int(amount), int(withdraw_round)))
        zero = "0x" + "00" * 20
        return DelegatorInfo(
            address=address,
            delegate=None if delegate == zero else bytes.fromhex(delegate[2:]),
            bonded=int(f.pendingStake(account).call()),
            fees=int(f.pendingFees(account).call()),
            locks=tuple(locks),
            tokens=self.token_balance(address),
        )

    def stake(self, orchestrator: bytes) -> int:
        return int(self.bonding.functions.orchestrators(_address(orchestrator)).call()[3])

    def active_set(self) -> list[bytes]:
        count = int(self.bonding.functions.activeCount().call())
        return [bytes.fromhex(self.bonding.functions.active(i).call()[2:]) for i in range(count)]

    def total_active_stake(self) -> int:
        """The pool's stake: the active stake of the next round."""
        return int(self.bonding.functions.totalActiveStake().call())

    def minter(self, round_: int | None = None) -> MinterInfo:
        """The minter's parameters and what it fixed for `round_` (default: the current round)."""
        f = self.bonding.functions
        r = self.protocol.current_round() if round_ is None else round_
        return MinterInfo(
            round=r,
            inflation=int(f.inflation().call()),
            inflation_change=int(f.inflationChange().call()),
            target_bonding_rate=int(f.targetBondingRate().call()),
            fixed=bool(f.roundFixed(r).call()),
            round_inflation=int(f.inflationForRound(r).call()),
            mintable=int(f.mintableForRound(r).call()),
            minted=int(f.mintedInRound(r).call()),
            active_stake=int(f.activeStakeForRound(r).call()),
            bonding_rate=int(f.bondingRateForRound(r).call()),
            total_supply=int(self.token.functions.totalSupply().call()),
        )
