"""The recipient accepts good tickets for their EV and refuses each bad one with its own error."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_payments_world import PRICE, World, key, make_world, seed

from events.crypto import SECP256K1_HALF_N, ZERO_ADDRESS, LocalKeySigner, keccak256
from payments import errors
from payments.fakes import FakeChain
from payments.params import ParamsPolicy, TicketParams
from payments.recipient import Recipient
from payments.ticket import Ticket, sign_ticket


def resign(world: World, ticket: Ticket, signer: LocalKeySigner | None = None) -> bytes:
    return sign_ticket(signer or world.gateway, ticket.hash())


def test_good_ticket_is_credited_its_exact_ev() -> None:
    world = make_world()
    params = world.params()
    (signed,) = world.tickets(1, params)
    receipt = world.recipient.receive(signed, world.now)
    assert receipt.credit == params.ev() >= Fraction(10**12)
    assert receipt.sender == world.gateway.address
    assert receipt.ticket_hash == signed.ticket.hash()
    assert receipt.price_per_pixel == PRICE


def test_replayed_nonce_is_refused() -> None:
    world = make_world()
    (signed,) = world.tickets(1)
    world.recipient.receive(signed, world.now)
    with pytest.raises(errors.TicketReplay, match="nonce 1"):
        world.recipient.receive(signed, world.now)


def test_forged_ticket_signed_by_another_key_is_refused() -> None:
    world = make_world()
    (signed,) = world.tickets(1)
    mallory = LocalKeySigner(key(99))
    forged = dataclasses.replace(signed, sig=resign(world, signed.ticket, mallory))
    with pytest.raises(errors.InvalidSignature, match="forged or tampered"):
        world.recipient.receive(forged, world.now)


@pytest.mark.parametrize(
    "change", [{"sender_nonce": 2}, {"face_value": 10**17}, {"win_prob": 2**255}]
)
def test_tampered_ticket_is_refused(change: dict[str, int]) -> None:
    world = make_world()
    (signed,) = world.tickets(1)
    tampered = dataclasses.replace(signed, ticket=dataclasses.replace(signed.ticket, **change))  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidSignature):
        world.recipient.receive(tampered, world.now)


@pytest.mark.parametrize(
    "change",
    [{"expiration_block": 10**9}, {"price_per_pixel": Fraction(1, 10**6)}, {"seed": seed(7)}],
)
def test_altered_params_outside_the_hash_break_the_rand_commitment(
    change: dict[str, object],
) -> None:
    """Expiration block, price and seed are not in the ticket hash; the HMAC still binds them."""
    world = make_world()
    (signed,) = world.tickets(1)
    with pytest.raises(errors.UnknownRandHash):
        world.recipient.receive(dataclasses.replace(signed, **change), world.now)  # type: ignore[arg-type]


def test_ticket_for_another_recipient_is_refused() -> None:
    world = make_world()
    other = Recipient(
        LocalKeySigner(key(50)).address,
        key(51),
        ParamsPolicy(ev=Fraction(10**12), redeem_gas=100_000),
        world.chain,
    )
    params = other.ticket_params(world.gateway.address, PRICE, seed(0), world.now)
    (signed,) = world.tickets(1, params)
    with pytest.raises(errors.WrongRecipient):
        world.recipient.receive(signed, world.now)


def test_expired_params_are_refused() -> None:
    world = make_world()
    (signed,) = world.tickets(1)
    world.advance(blocks=signed.expiration_block - world.now.block)
    with pytest.raises(errors.ParamsExpired, match=f"block {signed.expiration_block}"):
        world.recipient.receive(signed, world.now)


def test_unknown_rand_hash_is_refused() -> None:
    """A validly signed ticket against a rand hash we never issued."""
    world = make_world()
    params = dataclasses.replace(world.params(), recipient_rand_hash=keccak256(b"made up"))
    (signed,) = world.tickets(1, params)
    with pytest.raises(errors.UnknownRandHash, match="not issued by us"):
        world.recipient.receive(signed, world.now)


def test_malformed_seed_is_an_unknown_rand_hash() -> None:
    world = make_world()
    (signed,) = world.tickets(1)
    with pytest.raises(errors.UnknownRandHash):
        world.recipient.receive(dataclasses.replace(signed, seed=b"short"), world.now)


def test_high_s_signature_is_refused_before_it_can_buy_a_second_lottery_draw() -> None:
    """The high-s twin is a different byte string, so it would be a fresh draw of the win rule."""
    world = make_world()
    (signed,) = world.tickets(1)
    s = int.from_bytes(signed.sig[32:64], "big")
    assert s <= SECP256K1_HALF_N
    twin = signed.sig[:32] + (2 * SECP256K1_HALF_N + 1 - s).to_bytes(32, "big")
    twin += bytes((55 - signed.sig[64],))
    with pytest.raises(errors.MalleableSignature):
        world.recipient.receive(dataclasses.replace(signed, sig=twin), world.now)
    world.recipient.receive(signed, world.now)  # the original is still good


def test_sender_short_of_funds_is_refused() -> None:
    world = make_world(deposit=10**18, reserve=10**18)
    (signed,) = world.tickets(1)
    drained = FakeChain()
    drained.fund(world.gateway.address, deposit=1, reserve=0)
    recipient = Recipient(
        world.orchestrator.address,
        key(3),
        ParamsPolicy(ev=Fraction(10**12), redeem_gas=100_000),
        drained,
    )
    with pytest.raises(errors.InsufficientFunds, match="cannot cover face value"):
        recipient.receive(signed, world.now)


def test_sender_whose_funds_unlock_soon_is_refused() -> None:
    world = make_world()
    (signed,) = world.tickets(1)
    world.chain.unlock(world.gateway.address, withdraw_round=world.now.round + 1)
    with pytest.raises(errors.SenderUnlocking):
        world.recipient.receive(signed, world.now)


def test_zero_sender_is_refused() -> None:
    world = make_world()
    (signed,) = world.tickets(1)
    zero = dataclasses.replace(signed.ticket, sender=ZERO_ADDRESS)
    with pytest.raises(errors.InvalidSender):
        world.recipient.receive(dataclasses.replace(signed, ticket=zero), world.now)


def test_each_rejection_has_its_own_class_under_payment_error() -> None:
    classes = [
        errors.TicketReplay,
        errors.InvalidSignature,
        errors.WrongRecipient,
        errors.ParamsExpired,
        errors.UnknownRandHash,
        errors.MalleableSignature,
        errors.InsufficientFunds,
    ]
    assert len(set(classes)) == len(classes)
    assert all(issubclass(c, errors.PaymentError) for c in classes)


def test_nonce_budget_per_rand_is_bounded() -> None:
    world = make_world(max_nonces=5)
    tickets = world.tickets(6)
    for signed in tickets[:5]:
        world.recipient.receive(signed, world.now)
    with pytest.raises(errors.TooManyTickets, match="fetch new ticket params"):
        world.recipient.receive(tickets[5], world.now)


def test_nonces_of_expired_params_are_forgotten_and_their_tickets_stay_refused() -> None:
    world = make_world()
    (signed,) = world.tickets(1)
    world.recipient.receive(signed, world.now)
    assert len(world.recipient._nonces) == 1
    world.advance(blocks=40)
    fresh = world.tickets(1, world.params(1))[0]
    world.recipient.receive(fresh, world.now)
    assert len(world.recipient._nonces) == 1  # the expired rand was pruned
    with pytest.raises(errors.ParamsExpired):
        world.recipient.receive(signed, world.now)


def test_nonces_may_arrive_out_of_order() -> None:
    world = make_world()
    params = world.params()
    tickets = world.tickets(5, params)
    receipts = [world.recipient.receive(signed, world.now) for signed in reversed(tickets)]
    assert [r.credit for r in receipts] == [params.ev()] * 5
    assert {r.ticket_hash for r in receipts} == {s.ticket.hash() for s in tickets}


def test_free_params_need_no_funds_and_credit_nothing() -> None:
    world = make_world(deposit=0, reserve=0)
    params = world.params(price=Fraction(0))
    assert (params.face_value, params.win_prob) == (0, 0)
    receipt = world.recipient.receive(world.tickets(1, params)[0], world.now)
    assert receipt.credit == 0 and receipt.winning is None


def test_winning_ticket_is_queued_durably_and_reported() -> None:
    world = make_world(ev_multiplier=1, gas_price=0)  # face value == EV: every ticket wins
    params: TicketParams = world.params()
    assert params.win_prob == 2**256 - 1
    (signed,) = world.tickets(1, params)
    receipt = world.recipient.receive(signed, world.now)
    assert receipt.winning is not None
    record = world.store.get(receipt.ticket_hash)
    assert record is not None and record.winning == receipt.winning
    assert world.queue.pending_face_value(world.gateway.address) == params.face_value


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        Recipient(bytes(20), b"short", ParamsPolicy(Fraction(1), 1), FakeChain())


TICKET_POOL = make_world().tickets(8)  # built once: examples replay them in new recipients


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 7), min_size=1, max_size=16))
def test_each_nonce_is_accepted_once_in_any_order(order: list[int]) -> None:
    world = make_world()
    seen: set[int] = set()
    for index in order:
        signed = TICKET_POOL[index]
        if index in seen:
            with pytest.raises(errors.TicketReplay):
                world.recipient.receive(signed, world.now)
        else:
            world.recipient.receive(signed, world.now)
            seen.add(index)
