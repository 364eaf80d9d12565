"""Stake token and bonding on the embedded EVM: bond and delegate, the active set, rewards split
between an orchestrator's cut and its delegators to the wei, fees of real redeemed tickets split
by fee share, unbonding locks released only after the unbonding period, rebonding."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from web3 import Web3

from chain.client import Chain, Protocol, ProtocolParams, deploy_protocol
from chain.errors import AlreadyRewarded, InsufficientStake, NotRegistered, Reverted, StakeLocked
from chain.staking import PPM
from events.crypto import LocalKeySigner, keccak256
from payments.ticket import MAX_WIN_PROB, Ticket, rand_hash, sign_ticket

ROUND = 20
TOKEN = 10**18
PREC = 10**27
PPB = 10**9
SUPPLY = 10**6 * TOKEN
INFLATION, CHANGE, TARGET = 2_000_000, 100_000, 30_000_000  # 0.2%, 0.01% a round; 3% bonded
KEYS = {name: keccak256(b"bonding-test/" + name.encode()) for name in
        ("o1", "o2", "o3", "d1", "d2", "sender")}  # fmt: skip


def addr(name: str) -> bytes:
    return LocalKeySigner(KEYS[name]).address


@pytest.fixture
def world(evm: Chain) -> Iterator[tuple[Chain, Protocol]]:
    chain = evm
    params = ProtocolParams(round_length=ROUND, unbonding_period_rounds=2, max_active=2,
                            inflation_ppb=INFLATION, inflation_change_ppb=CHANGE,
                            target_bonding_rate_ppb=TARGET, genesis_supply=SUPPLY)  # fmt: skip
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


def operator(
    protocol: Protocol, name: str, stake: int, cut: int, share: int, model: Model | None = None
) -> None:
    protocol.staking.bond(KEYS[name], stake, addr(name))
    protocol.staking.register(KEYS[name], cut, share)
    if model is not None:
        model.bond(addr(name), addr(name), stake)
        model.register(addr(name), cut, share)


def replay(protocol: Protocol) -> Model:
    """A model of the freshly deployed world, from the round the fixture initialized."""
    m = protocol.staking.minter()
    model = Model(supply=m.total_supply, inflation=m.inflation, change=CHANGE, target=TARGET)
    model.round = m.round
    return model


def enter_round(chain: Chain, protocol: Protocol, model: Model) -> int:
    round_ = next_round(chain, protocol)
    model.new_round(round_)
    return round_


@dataclass
class Model:
    """Livepeer's rules as the contracts implement them, replayed in Python with the same integer
    arithmetic: the minter's per-round inflation and budget, stake that counts from the next
    round, and cumulative reward and fee factors per orchestrator with one epoch per round."""

    supply: int
    inflation: int  # parts per billion
    change: int = 0
    target: int = 0
    max_active: int = 100
    round: int = 0
    mintable: int = 0
    minted: int = 0
    active_stake: int = 0  # of the current round, fixed at its start
    bonding_rate: int = 0
    stake: dict[bytes, int] = field(default_factory=dict)  # live: counts from the next round
    round_stake: dict[bytes, int] = field(default_factory=dict)  # fixed at the round's start
    pool: list[bytes] = field(default_factory=list)  # registered, active from the next round
    active: set[bytes] = field(default_factory=set)  # the current round's active set
    cut: dict[bytes, int] = field(default_factory=dict)
    share: dict[bytes, int] = field(default_factory=dict)
    # per orchestrator, its epochs: [round, reward factor, fee factor]
    epochs: dict[bytes, list[list[int]]] = field(default_factory=dict)
    # delegator -> [orchestrator, bonded, baseline epoch, fees]
    books: dict[bytes, list] = field(default_factory=dict)  # type: ignore[type-arg]

    def new_round(self, round_: int) -> None:
        """The round's first call fixes its active stake, then inflation and mintable tokens."""
        self.round = round_
        self.active_stake = sum(self.stake[o] for o in self.pool)
        self.bonding_rate = self.active_stake * PPB // self.supply
        if self.bonding_rate < self.target:
            self.inflation = min(self.inflation + self.change, PPB)
        elif self.bonding_rate > self.target:
            self.inflation -= min(self.change, self.inflation)
        self.mintable = self.supply * self.inflation // PPB
        self.minted = 0
        self.round_stake = dict(self.stake)
        self.active = set(self.pool)

    def _touch(self, o: bytes) -> int:
        epochs = self.epochs.setdefault(o, [[-1, PREC, 0]])
        if epochs[-1][0] != self.round or len(epochs) == 1:
            epochs.append([self.round, epochs[-1][1], epochs[-1][2]])
        return len(epochs) - 1

    def pending(self, who: bytes) -> tuple[int, int]:
        o, bonded, start, fees = self.books.get(who, (None, 0, 0, 0))
        if o is None or not bonded:
            return bonded, fees
        epochs = self.epochs[o]
        _r, f0, g0 = epochs[start]
        _r, f, g = epochs[-1]
        return bonded * f // f0, fees + bonded * (g - g0) // f0

    def claim(self, who: bytes) -> None:
        book = self.books.setdefault(who, [None, 0, 0, 0])
        book[1], book[3] = self.pending(who)
        if book[0] is not None:
            book[2] = self._touch(book[0])

    def _restake(self, o: bytes, delta: int) -> None:
        self.stake[o] = self.stake.get(o, 0) + delta

    def register(self, o: bytes, cut: int, share: int) -> None:
        self.cut[o], self.share[o] = cut, share
        if o not in self.pool:
            assert len(self.pool) < self.max_active, "the replay keeps every orchestrator in"
            self.pool.append(o)

    def bond(self, who: bytes, o: bytes, amount: int) -> None:
        self.claim(who)
        book = self.books[who]
        old = book[0]
        if old is not None and old != o and book[1]:
            self._restake(old, -book[1])
            self._restake(o, book[1] + amount)
        else:
            self._restake(o, amount)
        if old != o:
            book[0] = o
            book[2] = self._touch(o)
        book[1] += amount

    def unbond(self, who: bytes, amount: int) -> None:
        self.claim(who)
        book = self.books[who]
        o = book[0]
        book[1] -= amount
        self._restake(o, -amount)
        if book[1] == 0:
            book[0] = None
            assert o != who, "the replay keeps orchestrators bonded"

    def rebond(self, who: bytes, amount: int) -> None:
        self.claim(who)
        self.books[who][1] += amount
        self._restake(self.books[who][0], amount)

    def reward(self, o: bytes) -> int:
        assert o in self.active, "only the round's active set is rewarded"
        stake = self.round_stake[o]
        amount = self.mintable * stake // self.active_stake if self.active_stake else 0
        amount = min(amount, self.mintable - self.minted)
        self.minted += amount
        e = self._touch(o)
        commission = amount * self.cut[o] // PPM
        after = self.epochs[o][e][1]
        if stake:
            after += after * (amount - commission) // stake
        self.epochs[o][e][1] = after
        self.claim(o)  # its own earnings, this reward included; the commission joins its bond
        self.books[o][1] += commission
        self._restake(o, amount)
        self.supply += amount
        return amount

    def fees(self, o: bytes, value: int) -> None:
        total = self.round_stake.get(o, self.stake.get(o, 0))
        shared = value * self.share[o] // PPM
        if shared and total:
            e = self._touch(o)  # valued at the round's start: the previous epoch's factor
            self.epochs[o][e][2] += self.epochs[o][e - 1][1] * shared // total
        else:
            shared = 0
        self.books[o][3] += value - shared


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
    assert (info.registered, info.active, info.in_pool) == (True, False, True)  # from next round
    assert (info.stake, info.round_stake) == (4 * TOKEN, 0)
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
    model = replay(protocol)
    operator(protocol, "o1", 1_000 * TOKEN, 100_000, 0, model)
    operator(protocol, "o2", 500 * TOKEN, 250_000, 0, model)
    s.bond(KEYS["d1"], 3_000 * TOKEN, o1)
    model.bond(d1, o1, 3_000 * TOKEN)
    s.bond(KEYS["d2"], 777 * TOKEN + 13, o1)
    model.bond(d2, o1, 777 * TOKEN + 13)
    info = s.orchestrator(o1)
    assert (info.active, info.in_pool) == (False, True)  # registered now: active next round
    chain.mine(ROUND)
    with pytest.raises(Reverted, match="current round is not initialized"):
        s.reward(KEYS["o1"])
    minted: list[int] = []
    for _round in range(3):
        enter_round(chain, protocol, model)
        minted.append(model.reward(o1))
        s.reward(KEYS["o1"])
        with pytest.raises(AlreadyRewarded):
            s.reward(KEYS["o1"])
        model.reward(o2)
        s.reward(KEYS["o2"])
        assert s.stake(o1) == model.stake[o1]
        if _round == 1:  # a delegator adds stake after the round's reward; earnings claimed first
            s.bond(KEYS["d2"], 5 * TOKEN, o1)
            model.bond(d2, o1, 5 * TOKEN)
    for who in (o1, d1, d2, o2):
        assert s.delegator(who).bonded == model.pending(who)[0]
    # the first rewarded round: o1's part of the round's mintable tokens, by its stake at the
    # round's start over the round's active stake; the bonding rate (0.5277%) is under the
    # target (3%): inflation rose a step in the fixture's round and another in this one (the
    # round mined over, where nothing happened, moved nothing)
    first = protocol.current_round() - 2
    m = s.minter(first)
    assert m.active_stake == 5_277 * TOKEN + 13
    assert m.bonding_rate == m.active_stake * PPB // SUPPLY
    assert m.round_inflation == INFLATION + 2 * CHANGE
    assert minted[0] == m.mintable * (4_777 * TOKEN + 13) // (5_277 * TOKEN + 13)
    dust = s.token_balance(protocol.bonding.address) - sum(
        s.delegator(w).bonded for w in (o1, o2, d1, d2)
    )
    assert 0 <= dust < 10  # the bonding contract never owes more than it holds


def test_fees_of_redeemed_tickets_split_by_fee_share(world: tuple[Chain, Protocol]) -> None:
    chain, protocol = world
    s = protocol.staking
    o1, d1 = addr("o1"), addr("d1")
    model = replay(protocol)
    operator(protocol, "o1", 1_000 * TOKEN, 100_000, 400_000, model)
    s.bond(KEYS["d1"], 3_000 * TOKEN, o1)
    model.bond(d1, o1, 3_000 * TOKEN)
    protocol.fund_deposit_and_reserve(KEYS["sender"], 10**18, 10**18)
    enter_round(chain, protocol, model)
    face = 10**16 + 7
    redeem_winning(protocol, "o1", 1, face)
    model.fees(o1, face)
    enter_round(chain, protocol, model)
    model.reward(o1)
    s.reward(KEYS["o1"])
    redeem_winning(protocol, "o1", 2, face)
    model.fees(o1, face)
    for who in (o1, d1):
        assert s.delegator(who).fees == model.pending(who)[1]
    # a fee after the round's reward is shared by the stake as it stood when the round started;
    # o1 claimed its own earnings with its reward, so its quarter of that share stays unowed:
    # the contract never owes more fees than it holds
    owed = sum(s.delegator(who).fees for who in (o1, d1))
    unowed = chain.balance(protocol.bonding.address) - owed
    assert 0 <= unowed - face * 4 // 10 // 4 < 10
    # d1 owns 3/4 of the stake: 3/4 of the first ticket's shared 40%
    assert model.pending(d1)[1] >= face * 4 // 10 * 3 // 4
    balance = chain.balance(d1)
    receipt = s.withdraw_fees(KEYS["d1"])
    assert chain.balance(d1) == balance + model.pending(d1)[1] - receipt["gasUsed"] * int(
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


def test_twenty_rounds_replay_livepeer_rules_to_the_wei(world: tuple[Chain, Protocol]) -> None:
    """Inflation follows the bonding rate toward the target, stake changed mid-round counts from
    the next round, and every reward is mintable x stake / active stake of its round."""
    chain, protocol = world
    s = protocol.staking
    o1, o2 = addr("o1"), addr("o2")
    model = replay(protocol)
    operator(protocol, "o1", 6_000 * TOKEN, 100_000, 0, model)
    operator(protocol, "o2", 4_000 * TOKEN, 200_000, 0, model)
    rng = random.Random(16)
    locks: dict[str, list[int]] = {"d1": [], "d2": [], "o3": []}
    # (round, delegator, action, orchestrator, tokens): bonding crosses the 3% target both ways
    plan = {
        2: [("d1", "bond", "o1", 9_000)],
        4: [("d2", "bond", "o2", 9_000)],
        5: [("o3", "bond", "o1", 8_000)],
        9: [("d1", "bond", "o2", 0)],  # moves the whole bond
        12: [("d1", "unbond", None, 7_000), ("o3", "unbond", None, 6_000)],
        15: [("d1", "rebond", None, 0)],
        18: [("d2", "unbond", None, 8_000)],
    }
    previous, start = model.inflation, model.round
    for _ in range(20):
        r = enter_round(chain, protocol, model)
        m = s.minter(r)
        assert (m.round_inflation, m.mintable, m.active_stake, m.bonding_rate) == (
            model.inflation,
            model.mintable,
            model.active_stake,
            model.bonding_rate,
        )
        if m.bonding_rate < TARGET:
            assert m.round_inflation == previous + CHANGE
        else:
            assert m.round_inflation == max(previous - CHANGE, 0)
        previous = m.round_inflation
        order = [o1, o2]
        rng.shuffle(order)
        early = rng.random() < 0.5  # the round's changes come before or after the rewards
        if not early:
            _reward_all(protocol, model, order)
        for name, action, to, tokens in plan.get(r - start, []):
            who = addr(name)
            if action == "bond":
                s.bond(KEYS[name], tokens * TOKEN, addr(to))
                model.bond(who, addr(to), tokens * TOKEN)
            elif action == "unbond":
                locks[name].append(s.unbond(KEYS[name], tokens * TOKEN))
                model.unbond(who, tokens * TOKEN)
            else:
                lock = locks[name].pop()
                (held,) = [lk.amount for lk in s.delegator(who).locks if lk.lock_id == lock]
                s.rebond(KEYS[name], lock)
                model.rebond(who, held)
        if early:
            _reward_all(protocol, model, order)
        f = protocol.bonding.functions
        for who in (o1, o2, addr("d1"), addr("d2"), addr("o3")):
            account = Web3.to_checksum_address(who)
            earned = (f.pendingStake(account).call(), f.pendingFees(account).call())
            assert earned == model.pending(who)
        assert (s.stake(o1), s.stake(o2)) == (model.stake[o1], model.stake[o2])
    history = [s.minter(r).round_inflation for r in range(model.round - 19, model.round + 1)]
    assert max(history) > history[0] and history[-1] < max(history)  # it rose, then fell


def _reward_all(protocol: Protocol, model: Model, order: list[bytes]) -> None:
    s = protocol.staking
    for o in order:
        name = next(n for n in KEYS if addr(n) == o)
        round_stake = protocol.bonding.functions.roundStake(Web3.to_checksum_address(o)).call()
        expected = model.mintable * round_stake // model.active_stake  # as the round fixed them
        before = s.stake(o)
        s.reward(KEYS[name])
        assert model.reward(o) == expected == s.stake(o) - before


def test_a_bond_made_mid_round_earns_from_the_next_round(world: tuple[Chain, Protocol]) -> None:
    chain, protocol = world
    s = protocol.staking
    o1, d1 = addr("o1"), addr("d1")
    model = replay(protocol)
    operator(protocol, "o1", 1_000 * TOKEN, 100_000, 0, model)
    enter_round(chain, protocol, model)
    s.bond(KEYS["d1"], 500 * TOKEN, o1)  # before o1's reward of this round
    model.bond(d1, o1, 500 * TOKEN)
    info = s.orchestrator(o1)
    assert (info.round_stake, info.stake) == (1_000 * TOKEN, 1_500 * TOKEN)
    s.reward(KEYS["o1"])
    assert model.reward(o1) == s.minter().mintable  # o1 is the whole active stake
    assert s.delegator(d1).bonded == 500 * TOKEN  # nothing from this round
    enter_round(chain, protocol, model)
    round_stake = s.orchestrator(o1).round_stake  # now with d1's bond and last round's reward
    assert round_stake == 1_500 * TOKEN + s.minter(model.round - 1).minted
    s.reward(KEYS["o1"])
    reward = model.reward(o1)
    assert s.delegator(d1).bonded == model.pending(d1)[0]
    # d1's part of the round's reward, less o1's 10% cut
    earned = s.delegator(d1).bonded - 500 * TOKEN
    assert earned == pytest.approx(reward * 9 // 10 * 500 * TOKEN // round_stake, abs=2)
