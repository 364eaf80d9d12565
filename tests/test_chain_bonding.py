"""Stake token and bonding on the embedded EVM: bond and delegate, the active set, rewards split
between an orchestrator's cut and its delegators to the wei, fees of real redeemed tickets split
by fee share, unbonding locks released only after the unbonding period, rebonding."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from chain.client import Chain, Protocol, ProtocolParams, deploy_protocol
from chain.errors import AlreadyRewarded, InsufficientStake, NotRegistered, Reverted, StakeLocked
from chain.staking import PPM
from events.crypto import LocalKeySigner, keccak256
from payments.ticket import MAX_WIN_PROB, Ticket, rand_hash, sign_ticket

ROUND = 20
TOKEN = 10**18
PREC = 10**27
KEYS = {name: keccak256(b"bonding-test/" + name.encode()) for name in
        ("o1", "o2", "o3", "d1", "d2", "sender")}  # fmt: skip


def addr(name: str) -> bytes:
    return LocalKeySigner(KEYS[name]).address


@pytest.fixture
def world(evm: Chain) -> Iterator[tuple[Chain, Protocol]]:
    chain = evm
    params = ProtocolParams(round_length=ROUND, unbonding_period_rounds=2, max_active=2,
                            inflation_ppb=2_000_000, genesis_supply=10**6 * TOKEN)  # fmt: skip
    protocol = deploy_protocol(chain, chain.dev_key, params)
    for name in KEYS:
        chain.transfer(chain.dev_key, addr(name), 10**20)
        protocol.staking.transfer_tokens(chain.dev_key, addr(name), 10_000 * TOKEN)
    protocol.ensure_round(chain.dev_key)
    yield chain, protocol


def next_round(chain: Chain, protocol: Protocol) -> int:
    """Initialize the next round in its first block, leaving the rest of it for the test."""
    block = chain.block_number()
    chain.mine((block // ROUND + 1) * ROUND - block - 1)
    protocol.initialize_round(chain.dev_key)
    return protocol.current_round()


def operator(protocol: Protocol, name: str, stake: int, cut: int, share: int) -> None:
    protocol.staking.bond(KEYS[name], stake, addr(name))
    protocol.staking.register(KEYS[name], cut, share)


@dataclass
class Model:
    """The contract's formulas, replayed in Python with the same integer arithmetic."""

    supply: int
    inflation_ppb: int
    factor: dict[bytes, int] = field(default_factory=dict)  # reward factor, current epoch
    fee_factor: dict[bytes, int] = field(default_factory=dict)
    stake: dict[bytes, int] = field(default_factory=dict)
    # delegator -> (bonded, reward factor and fee factor at its last claim, fees)
    books: dict[bytes, tuple[int, int, int, int]] = field(default_factory=dict)

    def claim(self, who: bytes, o: bytes) -> None:
        bonded, f0, g0, fees = self.books.get(who, (0, PREC, 0, 0))
        f, g = self.factor.get(o, PREC), self.fee_factor.get(o, 0)
        self.books[who] = (bonded * f // f0, f, g, fees + bonded * (g - g0) // f0)

    def bond(self, who: bytes, o: bytes, amount: int) -> None:
        self.claim(who, o)
        bonded, f, g, fees = self.books[who]
        self.books[who] = (bonded + amount, f, g, fees)
        self.stake[o] = self.stake.get(o, 0) + amount

    def mintable(self) -> int:
        """What a round may mint, fixed by the round's first reward."""
        return self.supply * self.inflation_ppb // 10**9

    def reward(self, o: bytes, cut: int, active_total: int, mintable: int) -> int:
        total = self.stake[o]
        amount = mintable * total // active_total
        self.claim(o, o)
        commission = amount * cut // PPM
        before = self.factor.get(o, PREC)
        after = before + before * (amount - commission) // total
        self.factor[o] = after
        bonded, _f, g, fees = self.books[o]
        self.books[o] = (bonded + commission * before // after, before, g, fees)
        self.stake[o] = total + amount
        self.supply += amount
        return amount

    def fees(self, o: bytes, value: int, share: int) -> None:
        shared = value * share // PPM
        f = self.factor.get(o, PREC)
        self.fee_factor[o] = self.fee_factor.get(o, 0) + f * shared // self.stake[o]
        bonded, f0, g0, fees = self.books[o]
        self.books[o] = (bonded, f0, g0, fees + value - shared)

    def pending(self, who: bytes, o: bytes) -> tuple[int, int]:
        bonded, f0, g0, fees = self.books[who]
        f, g = self.factor.get(o, PREC), self.fee_factor.get(o, 0)
        return bonded * f // f0, fees + bonded * (g - g0) // f0


def redeem_winning(protocol: Protocol, recipient: str, nonce: int, face: int) -> None:
    view = protocol.view()
    t = Ticket(addr(recipient), addr("sender"), face, MAX_WIN_PROB, nonce, rand_hash(nonce),
               view.round, view.round_block_hash)  # fmt: skip
    sig = sign_ticket(LocalKeySigner(KEYS["sender"]), t.hash())
    protocol.redeem(KEYS[recipient], t, sig, nonce)


def test_registration_needs_a_self_bond_and_delegation_a_registered_orchestrator(
    world: tuple[Chain, Protocol],
) -> None:
    _chain, protocol = world
    s = protocol.staking
    with pytest.raises(Reverted, match="bond to yourself before registering"):
        s.register(KEYS["o1"], 0, 0)
    with pytest.raises(NotRegistered):
        s.bond(KEYS["d1"], TOKEN, addr("o1"))
    s.bond(KEYS["o1"], TOKEN, addr("o1"))
    with pytest.raises(Reverted, match="reward cut above 100%"):
        s.register(KEYS["o1"], PPM + 1, 0)
    s.register(KEYS["o1"], 50_000, 250_000)
    s.bond(KEYS["d1"], 3 * TOKEN, addr("o1"))
    info = s.orchestrator(addr("o1"))
    assert (info.registered, info.active, info.stake) == (True, True, 4 * TOKEN)
    assert (info.reward_cut, info.fee_share) == (50_000, 250_000)
    d1 = s.delegator(addr("d1"))
    assert (d1.delegate, d1.bonded, d1.tokens) == (addr("o1"), 3 * TOKEN, 9_997 * TOKEN)
    with pytest.raises(InsufficientStake):  # more tokens than the account holds
        s.bond(KEYS["d2"], 20_000 * TOKEN, addr("o1"))
    operator(protocol, "o2", TOKEN, 0, 0)
    with pytest.raises(Reverted, match="a registered orchestrator stays bonded to itself"):
        s.bond(KEYS["o1"], TOKEN, addr("o2"))


def test_only_bonding_mints_the_token(world: tuple[Chain, Protocol]) -> None:
    chain, protocol = world
    with pytest.raises(Reverted, match="only the minter"):
        protocol._tx(chain.dev_key, protocol.token.functions.mint(protocol.bonding.address, 1))


def test_the_active_set_holds_the_largest_stakes(world: tuple[Chain, Protocol]) -> None:
    chain, protocol = world
    s = protocol.staking
    operator(protocol, "o1", 100 * TOKEN, 0, 0)
    operator(protocol, "o2", 200 * TOKEN, 0, 0)
    assert protocol.view().pool_size == 2  # the broker shares reserves among the active set
    operator(protocol, "o3", 50 * TOKEN, 0, 0)  # max_active is 2: the smallest stays out
    assert set(s.active_set()) == {addr("o1"), addr("o2")}
    assert s.total_active_stake() == 300 * TOKEN
    s.bond(KEYS["d1"], 100 * TOKEN, addr("o3"))  # 150 > 100: o3 replaces o1
    assert set(s.active_set()) == {addr("o2"), addr("o3")}
    assert s.total_active_stake() == 350 * TOKEN
    s.unbond(KEYS["o2"], 190 * TOKEN)  # 10 < 100: o1 comes back in
    assert set(s.active_set()) == {addr("o1"), addr("o3")}
    assert s.total_active_stake() == 250 * TOKEN
    next_round(chain, protocol)
    with pytest.raises(NotRegistered, match="not active"):
        s.reward(KEYS["o2"])


def test_rewards_split_between_cut_and_delegators_to_the_wei(
    world: tuple[Chain, Protocol],
) -> None:
    chain, protocol = world
    s = protocol.staking
    o1, o2, d1, d2 = (addr(n) for n in ("o1", "o2", "d1", "d2"))
    model = Model(supply=10**6 * TOKEN, inflation_ppb=2_000_000)
    cuts = {o1: 100_000, o2: 250_000}
    operator(protocol, "o1", 1_000 * TOKEN, cuts[o1], 0)
    model.bond(o1, o1, 1_000 * TOKEN)
    operator(protocol, "o2", 500 * TOKEN, cuts[o2], 0)
    model.bond(o2, o2, 500 * TOKEN)
    s.bond(KEYS["d1"], 3_000 * TOKEN, o1)
    model.bond(d1, o1, 3_000 * TOKEN)
    s.bond(KEYS["d2"], 777 * TOKEN + 13, o1)
    model.bond(d2, o1, 777 * TOKEN + 13)
    chain.mine(ROUND)
    with pytest.raises(Reverted, match="current round is not initialized"):
        s.reward(KEYS["o1"])
    minted: list[int] = []
    for _round in range(3):
        next_round(chain, protocol)
        active_total, mintable = s.total_active_stake(), model.mintable()
        minted.append(model.reward(o1, cuts[o1], active_total, mintable))
        s.reward(KEYS["o1"])
        with pytest.raises(AlreadyRewarded):
            s.reward(KEYS["o1"])
        model.reward(o2, cuts[o2], active_total, mintable)
        s.reward(KEYS["o2"])
        assert s.stake(o1) == model.stake[o1]
        if _round == 1:  # a delegator adds stake between rewards; earnings claimed first
            s.bond(KEYS["d2"], 5 * TOKEN, o1)
            model.bond(d2, o1, 5 * TOKEN)
    for who, o in ((o1, o1), (d1, o1), (d2, o1), (o2, o2)):
        assert s.delegator(who).bonded == model.pending(who, o)[0]
    # the first round's reward is o1's pro-rata part of 0.2% of the supply
    assert minted[0] == 2_000 * TOKEN * (4_777 * TOKEN + 13) // (5_277 * TOKEN + 13)
    dust = s.token_balance(protocol.bonding.address) - sum(
        s.delegator(w).bonded for w in (o1, o2, d1, d2)
    )
    assert 0 <= dust < 10  # the bonding contract never owes more than it holds


def test_fees_of_redeemed_tickets_split_by_fee_share(world: tuple[Chain, Protocol]) -> None:
    chain, protocol = world
    s = protocol.staking
    o1, d1 = addr("o1"), addr("d1")
    model = Model(supply=10**6 * TOKEN, inflation_ppb=2_000_000)
    operator(protocol, "o1", 1_000 * TOKEN, 100_000, 400_000)
    model.bond(o1, o1, 1_000 * TOKEN)
    s.bond(KEYS["d1"], 3_000 * TOKEN, o1)
    model.bond(d1, o1, 3_000 * TOKEN)
    protocol.fund_deposit_and_reserve(KEYS["sender"], 10**18, 10**18)
    next_round(chain, protocol)
    face = 10**16 + 7
    redeem_winning(protocol, "o1", 1, face)
    model.fees(o1, face, 400_000)
    next_round(chain, protocol)
    model.reward(o1, 100_000, s.total_active_stake(), model.mintable())
    s.reward(KEYS["o1"])
    redeem_winning(protocol, "o1", 2, face)
    model.fees(o1, face, 400_000)
    for who in (o1, d1):
        assert s.delegator(who).fees == model.pending(who, o1)[1]
    # d1 owns 3/4 of the stake before the reward: 3/4 of the first ticket's shared 40%
    assert model.pending(d1, o1)[1] >= face * 4 // 10 * 3 // 4
    balance = chain.balance(d1)
    receipt = s.withdraw_fees(KEYS["d1"])
    assert chain.balance(d1) == balance + model.pending(d1, o1)[1] - receipt["gasUsed"] * int(
        receipt["effectiveGasPrice"]
    )
    assert s.delegator(d1).fees == 0
    with pytest.raises(InsufficientStake, match="no fees"):
        s.withdraw_fees(KEYS["d1"])


def test_unregistered_recipients_cannot_redeem(world: tuple[Chain, Protocol]) -> None:
    chain, protocol = world
    protocol.fund_deposit_and_reserve(KEYS["sender"], 10**18, 10**18)
    next_round(chain, protocol)
    with pytest.raises(NotRegistered, match="ticket recipient"):
        redeem_winning(protocol, "o3", 1, 10**16)


def test_unbonding_locks_release_after_the_period_and_rebond(
    world: tuple[Chain, Protocol],
) -> None:
    chain, protocol = world
    s = protocol.staking
    o1, o2, d1 = addr("o1"), addr("o2"), addr("d1")
    operator(protocol, "o1", 100 * TOKEN, 0, 0)
    operator(protocol, "o2", 100 * TOKEN, 0, 0)
    s.bond(KEYS["d1"], 60 * TOKEN, o1)
    with pytest.raises(InsufficientStake):
        s.unbond(KEYS["d1"], 61 * TOKEN)
    first = s.unbond(KEYS["d1"], 10 * TOKEN)
    second = s.unbond(KEYS["d1"], 20 * TOKEN)
    assert s.stake(o1) == 130 * TOKEN
    info = s.delegator(d1)
    assert info.bonded == 30 * TOKEN
    locks = [(lk.lock_id, lk.amount) for lk in info.locks]
    assert locks == [(first, 10 * TOKEN), (second, 20 * TOKEN)]
    with pytest.raises(StakeLocked):
        s.withdraw_stake(KEYS["d1"], first)
    s.rebond(KEYS["d1"], second)
    assert (s.delegator(d1).bonded, s.stake(o1)) == (50 * TOKEN, 150 * TOKEN)
    with pytest.raises(Reverted, match="no such unbonding lock"):
        s.rebond(KEYS["d1"], second)
    next_round(chain, protocol)
    with pytest.raises(StakeLocked):
        s.withdraw_stake(KEYS["d1"], first)
    next_round(chain, protocol)
    tokens = s.token_balance(d1)
    s.withdraw_stake(KEYS["d1"], first)
    assert s.token_balance(d1) == tokens + 10 * TOKEN
    # unbonding everything ends the delegation; a lock can then be bonded elsewhere
    last = s.unbond(KEYS["d1"], 50 * TOKEN)
    assert s.delegator(d1).delegate is None
    with pytest.raises(Reverted, match="not bonded: use rebondFromUnbonded"):
        s.rebond(KEYS["d1"], last)
    s.rebond_from_unbonded(KEYS["d1"], o2, last)
    assert (s.delegator(d1).delegate, s.stake(o1), s.stake(o2)) == (o2, 100 * TOKEN, 150 * TOKEN)
    # moving a bond moves all of it
    s.bond(KEYS["d1"], 0, o1)
    assert (s.stake(o1), s.stake(o2)) == (150 * TOKEN, 100 * TOKEN)
