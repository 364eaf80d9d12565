"""ChainObserved events in the fold: what the protocol contracts did, as an observer logged it
(bonding and stake, the reward factors that give a delegator's earnings, the ticket broker's
deposits and reserves, rounds and the minter). The same chain log seen by several observers
counts once; the same log in two blocks is a violation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from events import kinds as k
from events.builder import violate
from events.envelope import SignedEvent
from events.state import REDEEMED, Delegation, Funds, MinterRound, TicketRecord

PREC = 10**27  # the bonding contract's factor scale
_NO_FUNDS = Funds()
_NO_ADDRESS = bytes(20)


def chain_observed(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    key = (c.tx_hash, c.log_index)
    seen = b.chain_seen.get(key)
    if seen is not None:
        if seen != c.block_hash:
            violate(b, e, "chain-conflict", f"log {c.tx_hash.hex()}:{c.log_index} in two blocks")
        return  # the same chain log seen by several observers counts once
    b.chain_seen[key] = c.block_hash
    _CHAIN_HANDLERS[c.what](b, e, c)


def _bond(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    delegator, orchestrator, amount = c.args
    current = b.delegations.get(delegator)
    total = amount
    if current is not None:
        total += current.amount
        if current.orchestrator != orchestrator:  # bonding elsewhere moves the whole stake
            _add_stake(b, current.orchestrator, -current.amount)
            amount = total
    _add_stake(b, orchestrator, amount)
    b.delegations[delegator] = Delegation(orchestrator, total)


def _unbond(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    delegator, orchestrator, amount = c.args
    current = b.delegations.get(delegator)
    if current is None or current.orchestrator != orchestrator or current.amount < amount:
        return violate(b, e, "unbond-exceeds-bond", str(amount))
    _add_stake(b, orchestrator, -amount)
    if current.amount == amount:
        del b.delegations[delegator]
    else:
        b.delegations[delegator] = Delegation(orchestrator, current.amount - amount)


def _bonded(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    """The bonding contract's Bond log: `amount` new tokens, `bonded` the delegator's total after;
    bonding to another orchestrator moves the previous stake (bonded - amount) along."""
    delegator, orchestrator, old, amount, bonded = c.args
    if amount > bonded:
        return violate(b, e, "bond-above-bonded", f"{amount} > {bonded}")
    moved = bonded - amount
    if old != _NO_ADDRESS and old != orchestrator and moved:
        if b.stakes.get(old, 0) < moved:
            return violate(b, e, "bond-move-exceeds-stake", str(moved))
        _add_stake(b, old, -moved)
        _add_stake(b, orchestrator, bonded)
    else:
        _add_stake(b, orchestrator, amount)
    _set_delegation(b, delegator, orchestrator, bonded, c)


def _unbonded(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    delegator, orchestrator, amount, bonded = c.args
    if amount > b.stakes.get(orchestrator, 0):
        return violate(b, e, "unbond-exceeds-stake", str(amount))
    _add_stake(b, orchestrator, -amount)
    _set_delegation(b, delegator, orchestrator, bonded, c)


def _rebonded(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    delegator, orchestrator, amount, bonded = c.args
    _add_stake(b, orchestrator, amount)
    _set_delegation(b, delegator, orchestrator, bonded, c)


def _set_delegation(
    b: Any, delegator: bytes, orchestrator: bytes, bonded: int, c: k.ChainObserved | None = None
) -> None:
    """`bonded` is the delegator's bond with its earnings claimed; a bond change in round R makes
    the end of R its baseline, as the contract does (see `delegated_stake`)."""
    if bonded:
        b.delegations[delegator] = Delegation(orchestrator, bonded)
        length = b.minter_params.get("round_length")
        if c is not None and length:
            factor = b.latest_factor.get(orchestrator, PREC)
            b.delegation_base[delegator] = (c.block_number // length, factor)
        elif delegator in b.delegation_base:
            del b.delegation_base[delegator]
        return
    if delegator in b.delegations:
        del b.delegations[delegator]
    if delegator in b.delegation_base:
        del b.delegation_base[delegator]


def _base_factor(b: Any, delegator: bytes, orchestrator: bytes) -> int | None:
    base = b.delegation_base.get(delegator)
    if base is None:
        return None
    round_, factor = base
    return int(b.reward_factors.get((orchestrator, round_), factor))


def delegated_stake(state: Any, delegator: bytes) -> int:
    """A delegator's bond with the rewards it has earned, from the contract's cumulative
    factors: bonded x (its orchestrator's latest factor) / (the factor at its baseline)."""
    d = state.delegations.get(delegator)
    if d is None:
        return 0
    start = _base_factor(state, delegator, d.orchestrator)
    if start is None:  # bonds observed without their round: no earnings known
        return int(d.amount)
    return int(d.amount * state.latest_factor.get(d.orchestrator, PREC) // start)


def _fees_withdrawn(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    """The contract claimed the delegator's earnings first: its bond, as of now, is the new
    baseline."""
    delegator, _amount = c.args
    d = b.delegations.get(delegator)
    if d is not None:
        _set_delegation(b, delegator, d.orchestrator, delegated_stake(b, delegator), c)


def _factor(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    """A reward's new cumulative factor; the orchestrator claims its own earnings, this reward
    included, and the commission joins its bond (as the contract does)."""
    orchestrator, round_, factor, commission = c.args
    b.reward_factors[(orchestrator, round_)] = factor
    b.latest_factor[orchestrator] = factor
    own = b.delegations.get(orchestrator)
    if own is not None and own.orchestrator == orchestrator:
        bonded = delegated_stake(b, orchestrator) + commission
        _set_delegation(b, orchestrator, orchestrator, bonded, c)


def _reward(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    orchestrator, amount = c.args
    _add_stake(b, orchestrator, amount)


def _add_stake(b: Any, orchestrator: bytes, delta: int) -> None:
    stake = b.stakes.get(orchestrator, 0) + delta
    if stake:
        b.stakes[orchestrator] = stake
    elif orchestrator in b.stakes:
        del b.stakes[orchestrator]


def _deposit(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    sender, amount = c.args
    f = b.funds.get(sender, _NO_FUNDS)
    b.funds[sender] = Funds(f.deposit + amount, f.reserve)


def _reserve(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    sender, amount = c.args
    f = b.funds.get(sender, _NO_FUNDS)
    b.funds[sender] = Funds(f.deposit, f.reserve + amount)


def _withdraw(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    sender, deposit, reserve = c.args
    f = b.funds.get(sender, _NO_FUNDS)
    if deposit > f.deposit or reserve > f.reserve:
        return violate(b, e, "withdraw-exceeds-funds")
    b.funds[sender] = Funds(f.deposit - deposit, f.reserve - reserve)


def _redemption(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    sender, _recipient, paid, ticket_hash = c.args
    f = b.funds.get(sender, _NO_FUNDS)
    # The broker pays from the deposit first and covers any shortfall from the reserve; `paid` is
    # what it paid (the face value, or less when the reserve share ran short).
    from_deposit = min(paid, f.deposit)
    from_reserve = min(paid - from_deposit, f.reserve)
    b.funds[sender] = Funds(f.deposit - from_deposit, f.reserve - from_reserve)
    known = b.tickets.get(ticket_hash)
    if known is not None and known.status != REDEEMED:
        b.tickets[ticket_hash] = replace_ticket(known, REDEEMED)


def _round(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    b.round = max(b.round, c.args[0])


def _minter(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    names = ("inflation", "inflation_change", "target_bonding_rate", "round_length")
    for name, value in zip(names, c.args, strict=True):
        b.minter_params[name] = value


def _inflation(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    round_, inflation, mintable, active_stake, bonding_rate, supply = c.args
    if round_ in b.minter:
        return violate(b, e, "round-fixed-twice", str(round_))
    b.minter[round_] = MinterRound(inflation, mintable, active_stake, bonding_rate, supply)


def _unlock(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    """Unlocking starts a withdrawal period; funds move only on withdraw."""


def replace_ticket(t: TicketRecord, status: str, claimed: bool | None = None) -> TicketRecord:
    claimed = t.claimed if claimed is None else claimed
    return TicketRecord(t.sender, t.recipient, t.face_value, t.win_prob, status, claimed)


_CHAIN_HANDLERS: dict[str, Callable[[Any, SignedEvent, k.ChainObserved], None]] = {
    "bond": _bond,
    "rebond": _bond,
    "unbond": _unbond,
    "reward": _reward,
    "bonded": _bonded,
    "unbonded": _unbonded,
    "rebonded": _rebonded,
    "deposit": _deposit,
    "reserve": _reserve,
    "withdraw": _withdraw,
    "redemption": _redemption,
    "round": _round,
    "unlock": _unlock,
    "minter": _minter,
    "inflation": _inflation,
    "factor": _factor,
    "fees_withdrawn": _fees_withdrawn,
}
