"""Face value, win probability, the recipient rand and Livepeer's max float rule."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import pytest
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st
from test_payments_world import GWEI, REDEEM_GAS, make_world

from payments import errors
from payments.funds import available_funds, max_float, reserve_alloc
from payments.interfaces import SenderInfo
from payments.params import ParamsPolicy, face_value_for, recipient_rand, win_prob_for
from payments.ticket import MAX_WIN_PROB, rand_hash, ticket_ev

U256 = 2**256
SENDER = b"\x22" * 20
POLICY = ParamsPolicy(ev=Fraction(10**12), redeem_gas=REDEEM_GAS)


@settings(max_examples=300)
@given(
    st.fractions(min_value=Fraction(1, 10**6), max_value=10**20, max_denominator=10**9),
    st.integers(1, 10**30),
)
def test_win_prob_is_the_smallest_that_reaches_the_ev(ev: Fraction, face_value: int) -> None:
    win_prob = win_prob_for(ev, face_value)
    if face_value <= ev:
        assert win_prob == MAX_WIN_PROB  # cannot do better than (almost) always winning
        return
    assert ticket_ev(face_value, win_prob) >= ev
    assert ticket_ev(face_value, win_prob - 1) < ev


def test_win_prob_is_zero_for_zero_face_value_or_ev() -> None:
    assert win_prob_for(Fraction(5), 0) == 0
    assert win_prob_for(Fraction(0), 10) == 0


def test_face_value_targets_the_redemption_cost_times_the_multiplier() -> None:
    assert face_value_for(POLICY, SENDER, GWEI, 10**30) == REDEEM_GAS * GWEI * 100


def test_face_value_falls_back_to_ev_times_multiplier_when_gas_is_cheap() -> None:
    assert face_value_for(POLICY, SENDER, 0, 10**30) == 10**12 * 100
    odd = ParamsPolicy(ev=Fraction(10, 3), redeem_gas=1, ev_multiplier=2)
    assert face_value_for(odd, SENDER, 0, 10**30) == 7  # ceil(20/3)


def test_face_value_is_capped_by_max_float_and_by_the_configured_max() -> None:
    assert face_value_for(POLICY, SENDER, GWEI, 10**15) == 10**15
    capped = ParamsPolicy(ev=Fraction(10**12), redeem_gas=REDEEM_GAS, max_face_value=10**14 * 5)
    assert face_value_for(capped, SENDER, GWEI, 10**30) == 10**14 * 5


def test_face_value_below_ev_is_refused() -> None:
    with pytest.raises(errors.InsufficientFunds, match="cannot carry a ticket worth"):
        face_value_for(POLICY, SENDER, 0, 10**12 - 1)


def test_face_value_below_redemption_cost_times_margin_is_refused() -> None:
    cost = REDEEM_GAS * GWEI
    assert face_value_for(POLICY, SENDER, GWEI, 2 * cost) == 2 * cost
    with pytest.raises(errors.InsufficientFunds, match="below the redemption cost"):
        face_value_for(POLICY, SENDER, GWEI, 2 * cost - 1)


def test_recipient_rand_is_an_hmac_over_every_field() -> None:
    base = (b"k" * 32, b"s" * 32, SENDER, 10, 20, 30, Fraction(1, 3), 4, b"h" * 32)
    rand = recipient_rand(*base)
    assert 0 <= rand < U256
    assert recipient_rand(*base) == rand
    variants = [
        (b"K" * 32, *base[1:]),
        (base[0], b"S" * 32, *base[2:]),
        (*base[:2], b"\x23" * 20, *base[3:]),
        (*base[:3], 11, *base[4:]),
        (*base[:4], 21, *base[5:]),
        (*base[:5], 31, *base[6:]),
        (*base[:6], Fraction(2, 3), *base[7:]),
        (*base[:6], Fraction(1, 4), *base[7:]),
        (*base[:7], 5, base[8]),
        (*base[:8], b"H" * 32),
    ]
    assert len({recipient_rand(*v) for v in variants} | {rand}) == len(variants) + 1
    assert rand_hash(rand) == keccak(rand.to_bytes(32, "big"))


def test_recipient_rand_refuses_malformed_inputs() -> None:
    args = (b"k" * 32, b"s" * 31, SENDER, 10, 20, 30, Fraction(1, 3), 4, b"h" * 32)
    with pytest.raises(errors.InvalidParams, match="seed"):
        recipient_rand(*args)
    with pytest.raises(errors.InvalidParams, match="uint256"):
        recipient_rand(b"k" * 32, b"s" * 32, SENDER, 10, 20, -1, Fraction(1), 4, b"h" * 32)


def test_reserve_alloc_splits_the_reserve_over_the_pool_less_claims() -> None:
    info = SenderInfo(deposit=0, reserve=900, reserve_claimed_in_round=100, claimed_by_recipient=50)
    assert reserve_alloc(info, 4) == 1000 // 4 - 50
    assert reserve_alloc(info, 0) == 0
    assert reserve_alloc(SenderInfo(0, 10, claimed_by_recipient=20), 1) == 0


def test_max_float_ignores_pending_only_when_the_deposit_covers_it_three_times() -> None:
    info = SenderInfo(deposit=300, reserve=1000)
    assert max_float(info, 1, 0) == 1000
    assert max_float(info, 1, 100) == 1000  # 300 >= 3 x 100
    assert max_float(info, 1, 101) == 1000 - 101
    assert max_float(info, 1, 5000) == 0
    assert available_funds(info, 2, 100) == 300 + 500 - 100


def test_quoted_face_value_follows_the_senders_reserve_share_and_pending_tickets() -> None:
    world = make_world(reserve=3 * 10**15, deposit=10**15)
    world.now = dataclasses.replace(world.now, pool_size=3)
    assert world.params().face_value == 10**15  # reserve / pool, below the 10**16 target
    world.chain.fund(world.gateway.address, reserve=-(3 * 10**15) + 3 * 10**12)
    with pytest.raises(errors.InsufficientFunds):
        world.params()


def test_unlocking_sender_gets_no_params() -> None:
    world = make_world()
    world.chain.unlock(world.gateway.address, withdraw_round=world.now.round + 1)
    with pytest.raises(errors.SenderUnlocking):
        world.params()
    world.chain.unlock(world.gateway.address, withdraw_round=world.now.round + 2)
    world.params()


def test_params_for_a_bad_sender_or_price_are_refused() -> None:
    world = make_world()
    with pytest.raises(errors.InvalidParams):
        world.recipient.ticket_params(bytes(20), Fraction(1), b"s" * 32, world.now)
    with pytest.raises(errors.InvalidParams):
        world.recipient.ticket_params(world.gateway.address, Fraction(-1), b"s" * 32, world.now)
