"""The gateway's payer when segments overlap: each segment's tickets cover it whichever order
the orchestrator takes them in."""

from __future__ import annotations

from fractions import Fraction

import pytest

from node.gateway.payment import Payer
from payments.balance import Balances, segment_fee
from payments.errors import InsufficientBalance
from payments.params import TicketParams
from payments.ticket import SignedTicket
from tests.test_payments_world import PRICE, World, make_world

MARGIN = Fraction(6, 5)


class _Ledger:
    def __init__(self, world: World) -> None:
        self.world = world

    def view(self):  # type: ignore[no-untyped-def]
        return self.world.now


class _Orchestrator:
    """The orchestrator's side as node.orchestrator.role runs it: take the tickets, refuse unless
    the balance covers the segment's estimate, hold the estimate until the result."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.balances = Balances()

    def intake(self, tickets: list[SignedTicket], pixels: int) -> None:
        key = self.world.gateway.address.hex()
        for t in tickets:
            self.balances.credit(key, self.world.recipient.receive(t, self.world.now).credit)
        self.balances.charge(key, segment_fee(pixels, PRICE))


def _payer(world: World) -> Payer:
    return Payer(None, world.gateway.address, world.sender, _Ledger(world), MARGIN)  # type: ignore[arg-type]


def _pixels(params: TicketParams, fees_in_ev: Fraction) -> int:
    """Output pixels whose fee is `fees_in_ev` tickets' worth."""
    return int(params.ev() * fees_in_ev / PRICE)


async def test_overlapping_segments_are_covered_in_either_order() -> None:
    world = make_world()
    payer, orch = _payer(world), _Orchestrator(world)
    params = world.params()
    # a fee of 2.6 tickets: with the margin, 4 tickets (surplus 1.4) for the first segment
    pixels = _pixels(params, Fraction(26, 10))
    first = await payer.tickets(params, pixels)
    second = await payer.tickets(world.params(1), pixels)  # before the first is answered for
    assert len(first) == 4
    orch.intake(second, pixels)  # the second overtakes the first on the way
    orch.intake(first, pixels)
    payer.landed(first)
    payer.landed(second)
    # once both are answered for, the surplus they left counts: the third needs fewer tickets
    third = await payer.tickets(world.params(2), pixels)
    assert len(third) < len(first)
    orch.intake(third, pixels)


async def test_without_the_rule_the_overtaking_segment_is_short() -> None:
    """What the rule prevents: a segment that counted on the surplus of tickets the orchestrator
    had not taken yet is refused when it arrives first."""
    world = make_world()
    payer, orch = _payer(world), _Orchestrator(world)
    params = world.params()
    pixels = _pixels(params, Fraction(26, 10))
    first = await payer.tickets(params, pixels)
    payer.landed(first)  # as if answered for: the second counts on its surplus
    second = await payer.tickets(world.params(1), pixels)
    assert len(second) < len(first)
    with pytest.raises(InsufficientBalance):
        orch.intake(second, pixels)
