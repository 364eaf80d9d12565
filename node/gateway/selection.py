"""Which orchestrator gets the next segment: Livepeer's stake/price/latency mix plus the reputation
the log proves (verified vs failed verdicts), with failing orchestrators suspended for a while and
each one's load kept within the capacity it offered. Pure apart from the clock passed in."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from events.state import OfferState, Reputation, State

LATENCY_REF_S = 2.0  # a segment answered in this long halves the latency factor


@dataclass(frozen=True, slots=True)
class Candidate:
    address: bytes
    offer: OfferState
    stake: int
    reputation: Reputation
    score: float

    @property
    def price(self) -> Fraction:
        return Fraction(self.offer.price_per_unit, self.offer.pixels_per_unit)


@dataclass(slots=True)
class _Local:
    """What this gateway itself measured of one orchestrator."""

    in_flight: int = 0
    latencies: list[float] = field(default_factory=list)
    failures_in_row: int = 0
    suspended_until: float = 0.0


class Selector:
    """Selection policy of one gateway; `now` is a monotonic clock reading in seconds."""

    def __init__(
        self,
        capability: str = "transcode:h264",
        max_price: Fraction | None = None,
        suspend_s: float = 300.0,
        depth: int = 1,
    ) -> None:
        """`depth` segments per offered slot may be in flight: 2 lets the next segment's quote,
        tickets and upload overlap the current one (an orchestrator stages one job per slot)."""
        self.capability = capability
        self.depth = depth
        self.max_price = max_price
        self.suspend_s = suspend_s
        self.local: dict[bytes, _Local] = {}

    def _local(self, address: bytes) -> _Local:
        return self.local.setdefault(address, _Local())

    def affordable(self, offer: OfferState) -> bool:
        """Whether the offer's price per pixel is within what this gateway pays."""
        price = Fraction(offer.price_per_unit, offer.pixels_per_unit)
        return self.max_price is None or price <= self.max_price

    def candidates(
        self, state: State, now: float, exclude: frozenset[bytes] = frozenset()
    ) -> list[Candidate]:
        """Usable orchestrators with a free slot, best first."""
        offers = [
            (a, o)
            for a, o in state.offers.items()
            if self.capability in o.capabilities and a not in exclude
        ]
        offers = [(a, o) for a, o in offers if self.affordable(o)]
        if not offers:
            return []
        cheapest = min(Fraction(o.price_per_unit, o.pixels_per_unit) for _, o in offers)
        top_stake = max((state.stakes.get(a, 0) for a, _ in offers), default=0)
        out = []
        for address, offer in offers:
            local = self._local(address)
            slots = self.depth * max(1, offer.capacity)
            if local.suspended_until > now or local.in_flight >= slots:
                continue
            stake = state.stakes.get(address, 0)
            rep = state.reputation.get(address, Reputation())
            score = _score(offer, stake, top_stake, cheapest, rep, local)
            out.append(Candidate(address, offer, stake, rep, score))
        out.sort(key=lambda c: (-c.score, c.address))
        return out

    def suspended(self, now: float) -> list[bytes]:
        return [a for a, loc in self.local.items() if loc.suspended_until > now]

    def acquire(self, address: bytes) -> None:
        self._local(address).in_flight += 1

    def release(self, address: bytes) -> None:
        self._local(address).in_flight -= 1

    def succeeded(self, address: bytes, latency_s: float) -> None:
        local = self._local(address)
        local.latencies = [*local.latencies[-19:], latency_s]
        local.failures_in_row = 0

    def failed(self, address: bytes, now: float) -> None:
        """A failed or rejected segment suspends the orchestrator, longer each time in a row."""
        local = self._local(address)
        local.failures_in_row += 1
        local.suspended_until = now + self.suspend_s * 2 ** (local.failures_in_row - 1)


def _score(
    offer: OfferState,
    stake: int,
    top_stake: int,
    cheapest: Fraction,
    rep: Reputation,
    local: _Local,
) -> float:
    price = Fraction(offer.price_per_unit, offer.pixels_per_unit)
    price_factor = float(cheapest / price) if price > 0 else 1.0
    stake_factor = 0.5 + 0.5 * (stake / top_stake if top_stake else 0.0)
    # Laplace-smoothed share of verified jobs; an equivocation weighs like ten failures
    bad = rep.failed + 10 * rep.equivocations
    reputation = (rep.verified + 1) / (rep.verified + bad + 2)
    latency = sum(local.latencies) / len(local.latencies) if local.latencies else 0.0
    latency_factor = 1.0 / (1.0 + latency / LATENCY_REF_S)
    load_factor = 1.0 / (1.0 + local.in_flight / max(1, offer.capacity))
    return price_factor * stake_factor * reputation * latency_factor * load_factor
