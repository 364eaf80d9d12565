"""Statistics with fixed keys and seeds: the lottery pays what it promises, and a session's
ticket credits cover its fees."""

from __future__ import annotations

from fractions import Fraction

import pytest
from test_payments_world import make_world

from payments.balance import Balances, segment_fee, tickets_needed
from payments.errors import InsufficientBalance, InvalidParams
from payments.ticket import UINT256_LIMIT

TICKETS = 4_000
PER_PARAMS = 500  # under the recipient's 600 nonces per rand
SIGMAS = 4


def test_total_winning_face_value_matches_total_ev_within_the_variance_bound() -> None:
    """Each ticket pays F with probability p: total W*F has mean N*F*p = total EV and variance
    N*F^2*p*(1-p). Outcomes are deterministic (fixed keys, seeds, RFC 6979 signatures), so the
    4-sigma bound (two-sided chance ~6e-5 under the model) is a fixed check, never flaky."""
    world = make_world(ev=Fraction(10**12), ev_multiplier=25, gas_price=0)  # p = 1/25
    total_ev = Fraction(0)
    winning_face = 0
    wins = 0
    face = win_prob = 0
    for n in range(TICKETS // PER_PARAMS):
        params = world.params(n)
        face, win_prob = params.face_value, params.win_prob
        for signed in world.tickets(PER_PARAMS, params):
            receipt = world.recipient.receive(signed, world.now)
            total_ev += receipt.credit
            if receipt.winning is not None:
                wins += 1
                winning_face += receipt.winning.ticket.face_value
    p = Fraction(win_prob, UINT256_LIMIT)
    assert total_ev == TICKETS * face * p
    variance = TICKETS * face**2 * p * (1 - p)
    deviation = winning_face - total_ev
    assert deviation**2 <= SIGMAS**2 * variance, (wins, float(TICKETS * p))
    # and not trivially: some won, not all
    assert 0 < wins < TICKETS
    assert world.queue.pending_face_value(world.gateway.address) == winning_face


def test_session_credits_cover_its_fees() -> None:
    """The gateway sends enough tickets per segment to cover its fee at the quoted price; the
    orchestrator charges each segment before the work and never runs a negative balance."""
    world = make_world(gas_price=0)
    params = world.params(price=Fraction(45_000))  # ~2.5 tickets of EV per segment
    session = world.sender.start_session(params)
    gateway_view, orchestrator_books = Balances(), Balances()
    ticket_ev = params.ev()
    fees = Fraction(0)
    for segment in range(60):
        pixels = 1280 * 720 * 60 + segment * 997  # two seconds of 720p30, varying a little
        fee = segment_fee(pixels, params.price_per_pixel)
        count = tickets_needed(fee, gateway_view.balance("s"), ticket_ev)
        for signed in world.sender.create_tickets(session, count, world.now):
            receipt = world.recipient.receive(signed, world.now)
            orchestrator_books.credit("s", receipt.credit)
            gateway_view.credit("s", ticket_ev)
        orchestrator_books.charge("s", fee)  # refuses the work if the credit is short
        gateway_view.debit("s", fee)
        fees += fee
        assert orchestrator_books.balance("s") >= 0
    assert orchestrator_books.balance("s") == gateway_view.balance("s")
    assert 0 <= orchestrator_books.balance("s") < ticket_ev  # never more than one ticket ahead
    assert fees > 0


def test_work_is_refused_below_the_minimum_balance_naming_the_shortfall() -> None:
    books = Balances(min_balance=Fraction(100))
    books.credit("job-1", Fraction(250))
    books.charge("job-1", Fraction(150))  # exactly leaves the minimum
    with pytest.raises(InsufficientBalance, match="short by 1/2") as caught:
        books.check("job-1", Fraction(1, 2))
    assert caught.value.shortfall == Fraction(1, 2)
    assert books.balance("job-1") == 100
    assert books.close("job-1") == 100 and books.balance("job-1") == 0


def test_fee_and_ticket_count_arithmetic_is_exact() -> None:
    assert segment_fee(1920 * 1080, Fraction(1, 3)) == Fraction(1920 * 1080, 3)
    assert tickets_needed(Fraction(10), Fraction(0), Fraction(3)) == 4
    assert tickets_needed(Fraction(9), Fraction(0), Fraction(3)) == 3
    assert tickets_needed(Fraction(9), Fraction(10), Fraction(3)) == 0
    with pytest.raises(InvalidParams):
        tickets_needed(Fraction(1), Fraction(0), Fraction(0))
    with pytest.raises(InvalidParams):
        segment_fee(-1, Fraction(1))
    with pytest.raises(InvalidParams):
        Balances().credit("s", Fraction(-1))
