"""Selection's policy on its own: each weight moves the choice the way the docstring says,
over-capacity and over-price offers are never chosen, and a failure suspends an orchestrator for a
time that doubles with each failure in a row and ends with a success."""

from __future__ import annotations

from fractions import Fraction

from immutables import Map

from events.state import OfferState, Reputation, State
from node.gateway.selection import Selector

A, B, C = b"\xaa" * 20, b"\xbb" * 20, b"\xcc" * 20
CAP = "transcode:h264"


def offer(price: int = 1000, capacity: int = 4, caps: tuple[str, ...] = (CAP,)) -> OfferState:
    return OfferState(price, 1, caps, capacity, "peer", (), 0)


def state(
    offers: dict[bytes, OfferState],
    stakes: dict[bytes, int] | None = None,
    reputation: dict[bytes, Reputation] | None = None,
) -> State:
    return State(offers=Map(offers), stakes=Map(stakes or {}), reputation=Map(reputation or {}))


def best(selector: Selector, s: State, now: float = 0.0) -> bytes:
    return selector.candidates(s, now)[0].address


def test_each_weight_prefers_what_it_should_with_everything_else_equal() -> None:
    selector = Selector()
    assert best(selector, state({A: offer(2000), B: offer(1000)})) == B  # cheaper
    assert best(selector, state({A: offer(), B: offer()}, stakes={A: 10, B: 1000})) == B  # staked
    proven = {A: Reputation(verified=2, failed=8), B: Reputation(verified=10)}
    assert best(selector, state({A: offer(), B: offer()}, reputation=proven)) == B
    equivocated = {A: Reputation(verified=50, equivocations=1), B: Reputation(verified=5)}
    assert best(selector, state({A: offer(), B: offer()}, reputation=equivocated)) == B
    timed = Selector()
    timed.succeeded(A, 4.0)
    timed.succeeded(B, 0.5)
    assert best(timed, state({A: offer(), B: offer()})) == B  # faster
    loaded = Selector()
    loaded.acquire(A)
    assert best(loaded, state({A: offer(), B: offer()})) == B  # less loaded


def test_price_weighs_against_stake_smoothly_not_absolutely() -> None:
    # stake weighs 0.5..1, price cheapest/price: three times the price loses whatever the stake
    s = state({A: offer(3000), B: offer(1000)}, stakes={A: 10**6, B: 1})
    scores = {c.address: c.score for c in Selector().candidates(s, 0.0)}
    assert scores[B] > scores[A] > 0


def test_offers_without_the_capability_over_the_max_price_or_at_capacity_are_never_chosen() -> None:
    selector = Selector(max_price=Fraction(1500))
    s = state({A: offer(2000), B: offer(caps=("ai:detect-faces",)), C: offer(1000, capacity=1)})
    assert [c.address for c in selector.candidates(s, 0.0)] == [C]
    selector.acquire(C)
    assert selector.candidates(s, 0.0) == []
    selector.release(C)
    assert [c.address for c in selector.candidates(s, 0.0)] == [C]
    assert [c.address for c in selector.candidates(s, 0.0, exclude=frozenset({C}))] == []


def test_failures_suspend_for_doubling_periods_and_a_success_resets_the_count() -> None:
    selector = Selector(suspend_s=10.0)
    s = state({A: offer(), B: offer(5000)})
    assert best(selector, s) == A
    selector.failed(A, now=100.0)
    assert selector.suspended(105.0) == [A]
    assert [c.address for c in selector.candidates(s, 105.0)] == [B]
    assert best(selector, s, now=110.0) == A  # back after 10 s
    selector.failed(A, now=110.0)
    assert selector.suspended(129.0) == [A]  # second failure in a row: 20 s
    assert selector.suspended(130.0) == []
    selector.succeeded(A, 0.1)
    selector.failed(A, now=200.0)
    assert selector.suspended(209.0) == [A] and selector.suspended(210.0) == []  # reset to 10 s


def test_ties_break_on_address_so_every_gateway_orders_alike() -> None:
    s = state({B: offer(), A: offer(), C: offer()})
    assert [c.address for c in Selector().candidates(s, 0.0)] == [A, B, C]
