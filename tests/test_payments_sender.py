"""The sender signs tickets with strictly increasing nonces and refuses params it must not pay."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_payments_world import make_world

from events.crypto import ZERO_ADDRESS, recover_address
from payments import errors
from payments.sender import Sender, SenderConfig
from payments.ticket import signed_message_digest


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=6), st.integers(0, 2**32))
def test_nonces_strictly_increase_across_batches(batches: list[int], start: int) -> None:
    world = make_world()
    session = world.sender.start_session(world.params(), nonce=start)
    nonces = [
        t.ticket.sender_nonce
        for size in batches
        for t in world.sender.create_tickets(session, size, world.now)
    ]
    assert nonces == list(range(start + 1, start + 1 + sum(batches)))
    assert world.sender.nonce(session) == nonces[-1]


def test_tickets_carry_the_params_and_recover_to_the_sender() -> None:
    world = make_world()
    params = world.params()
    for signed in world.tickets(3, params):
        t = signed.ticket
        assert (t.recipient, t.face_value, t.win_prob) == (
            params.recipient,
            params.face_value,
            params.win_prob,
        )
        assert (t.creation_round, t.creation_round_block_hash) == (
            params.creation_round,
            params.creation_round_block_hash,
        )
        assert (signed.seed, signed.expiration_block, signed.price_per_pixel) == (
            params.seed,
            params.expiration_block,
            params.price_per_pixel,
        )
        digest = signed_message_digest(t.hash())
        assert recover_address(digest, signed.sig) == world.gateway.address


def test_params_inside_the_expiry_buffer_are_refused() -> None:
    world = make_world()
    session = world.sender.start_session(world.params())
    world.advance(blocks=39)  # one block left: within the default buffer of 1
    with pytest.raises(errors.ParamsExpired):
        world.sender.create_tickets(session, 1, world.now)


def test_face_value_above_the_deposit_share_is_refused() -> None:
    world = make_world(deposit=10**18)
    params = dataclasses.replace(world.params(), face_value=10**18 + 1)
    session = world.sender.start_session(params)
    with pytest.raises(errors.InsufficientFunds, match="short by 1 wei"):
        world.sender.create_tickets(session, 1, world.now)
    strict = Sender(world.gateway, SenderConfig(Fraction(10**18), Fraction(10**20), 4), world.chain)
    session = strict.start_session(world.params())
    ok = strict.create_tickets(session, 1, world.now)
    assert ok
    world.chain.fund(world.gateway.address, deposit=-(10**18) + 4 * 10**16 - 4)
    with pytest.raises(errors.InsufficientFunds):
        strict.create_tickets(session, 1, world.now)


def test_ev_above_the_max_is_refused() -> None:
    world = make_world(max_ev=Fraction(10**11))  # the recipient asks for 10**12
    session = world.sender.start_session(world.params())
    with pytest.raises(errors.InvalidParams, match="exceeds the max EV"):
        world.sender.create_tickets(session, 1, world.now)


def test_total_ev_above_the_max_is_refused() -> None:
    world = make_world()
    config = SenderConfig(max_ev=Fraction(10**13), max_total_ev=Fraction(10**14))
    sender = Sender(world.gateway, config, world.chain)
    session = sender.start_session(world.params())  # EV just above 10**12
    sender.create_tickets(session, 99, world.now)
    with pytest.raises(errors.InvalidParams, match=r"100 tickets .* max total EV 10{14} wei"):
        sender.create_tickets(session, 100, world.now)
    assert sender.nonce(session) == 99  # nothing more was signed


@pytest.mark.parametrize("change", [{"win_prob": 2**256}, {"face_value": 2**256}])
def test_out_of_range_params_are_refused(change: dict[str, int]) -> None:
    world = make_world(max_ev=Fraction(2**300))
    params = dataclasses.replace(world.params(), **change)  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidParams, match="uint256"):
        world.sender.validate_params(params, world.now)


def test_zero_recipient_and_unlocking_sender_are_refused() -> None:
    world = make_world()
    with pytest.raises(errors.InvalidParams):
        world.sender.validate_params(
            dataclasses.replace(world.params(), recipient=ZERO_ADDRESS), world.now
        )
    params = world.params()
    world.chain.unlock(world.gateway.address, withdraw_round=world.now.round + 1)
    with pytest.raises(errors.SenderUnlocking, match="unlocks"):
        world.sender.validate_params(params, world.now)


def test_unknown_and_ended_sessions() -> None:
    world = make_world()
    with pytest.raises(errors.UnknownSession):
        world.sender.create_tickets(b"\x00" * 32, 1, world.now)
    session = world.sender.start_session(world.params())
    assert world.sender.ev(session) == world.params().ev()
    world.sender.end_session(session)
    with pytest.raises(errors.UnknownSession):
        world.sender.nonce(session)


def test_prune_drops_expired_sessions() -> None:
    world = make_world()
    old = world.sender.start_session(world.params(0))
    world.advance(blocks=20)
    young = world.sender.start_session(world.params(1))
    assert world.sender.prune(world.now.block + 20) == 1
    world.sender.nonce(young)
    with pytest.raises(errors.UnknownSession):
        world.sender.nonce(old)
