"""A realistic signed history for tests, demos and benchmarks: orchestrators' offers, chain
observations (rounds, bonds, deposits), jobs through their life cycle with claims, failures and
reassignment, tickets issued and received, and winning tickets redeemed. Deterministic per seed."""

from __future__ import annotations

import random
from collections.abc import Generator, Iterator
from dataclasses import dataclass

from events import kinds as k
from events.author import Author
from events.crypto import LocalKeySigner, keccak256
from events.envelope import SignedEvent
from payments.ticket import Ticket, is_winning, rand_hash, sign_ticket

Step = tuple[int, k.Body]  # (author index, body)
Script = Generator[Step, SignedEvent, None]

PIXELS_PER_UNIT = 1
PRICE_RANGE = (200, 1200)  # wei per pixel
WIN_PROB = (2**256 - 1) // 25  # one ticket in 25 wins
FACE_VALUE = 10**15
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass(frozen=True, slots=True)
class Cast:
    gateways: tuple[int, ...]
    orchestrators: tuple[int, ...]


def synth_keys(count: int, seed: int) -> list[bytes]:
    return [keccak256(b"castnet-synth/%d/%d" % (seed, i)) for i in range(count)]


def synth_events(count: int, authors: int, seed: int = 0) -> Iterator[SignedEvent]:
    """Exactly `count` signed events by `authors` (>= 2) authors."""
    if authors < 2:
        raise ValueError(
            "a synthetic network needs at least 2 authors (a gateway and an orchestrator)"
        )
    rng = random.Random(seed)
    signers = [Author(LocalKeySigner(key)) for key in synth_keys(authors, seed)]
    n_gw = max(1, authors // 3)
    cast = Cast(tuple(range(n_gw)), tuple(range(n_gw, authors)))
    now = START_MS
    produced = 0
    setup: list[Script] = [_setup(rng, cast, signers)]
    active: list[Script] = []
    pending: dict[int, SignedEvent | None] = {}
    while produced < count:
        if setup:
            script, from_setup = setup[0], True
        else:
            while len(active) < 8:
                active.append(_job(rng, cast, signers))
            script, from_setup = rng.choice(active), False
        try:
            sent = pending.pop(id(script), None)
            who, body = script.send(sent) if sent is not None else next(script)
        except StopIteration:
            (setup if from_setup else active).remove(script)
            continue
        now += rng.randint(1, 40)
        event = signers[who].sign(body, now)
        pending[id(script)] = event
        produced += 1
        yield event


def _setup(rng: random.Random, cast: Cast, signers: list[Author]) -> Script:
    observer = cast.gateways[0]
    chain = _Chain(rng)
    yield observer, chain.observe("round", 1)
    for o in cast.orchestrators:
        price = rng.randint(*PRICE_RANGE)
        offer = k.Offer(
            price,
            PIXELS_PER_UNIT,
            ("transcode:h264", "ai:detect-faces"),
            rng.randint(2, 8),
            f"peer-{o}",
            (f"/ip4/127.0.0.1/tcp/{9000 + o}",),
        )
        yield o, offer
        stake = rng.randint(1, 100) * 10**18
        yield observer, chain.observe("bond", signers[o].address, signers[o].address, stake)
        delegator = keccak256(b"delegator" + signers[o].address)[:20]
        yield observer, chain.observe("bond", delegator, signers[o].address, stake // 2)
    for g in cast.gateways:
        yield observer, chain.observe("deposit", signers[g].address, 10**20)
        yield observer, chain.observe("reserve", signers[g].address, 10**19)


class _Chain:
    """Fake block coordinates for observed chain logs, increasing like a real chain's."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.block = 1000

    def observe(self, what: str, *args: object) -> k.ChainObserved:
        self.block += self.rng.randint(1, 3)
        block_hash = keccak256(b"block%d" % self.block)
        tx_hash = keccak256(block_hash + self.rng.randbytes(8))
        return k.ChainObserved(what, self.block, block_hash, tx_hash, 0, tuple(args))


def _job(rng: random.Random, cast: Cast, signers: list[Author]) -> Script:
    gateway = rng.choice(cast.gateways)
    g_addr = signers[gateway].address
    max_price = PRICE_RANGE[1]
    segment = rng.randbytes(32)
    posted = yield (
        gateway,
        k.JobPosted(
            "transcode",
            keccak256(segment),
            rng.randint(200_000, 2_000_000),
            2000,
            ("720p", "480p", "360p"),
            max_price,
            PIXELS_PER_UNIT,
            (),
        ),
    )
    job_id = posted.id
    claimers = rng.sample(cast.orchestrators, min(len(cast.orchestrators), rng.randint(1, 3)))
    prices = {o: rng.randint(PRICE_RANGE[0], max_price) for o in claimers}
    for attempt, o in enumerate(claimers):
        o_addr = signers[o].address
        yield gateway, k.JobAssigned(job_id, o_addr, prices[o], PIXELS_PER_UNIT)
        last = attempt == len(claimers) - 1
        if not last and rng.random() < 0.1:  # the orchestrator timed out: fail over
            yield gateway, k.JobVerdict(job_id, o_addr, False, "timeout", 4000)
            continue
        yield o, k.JobClaimed(job_id, prices[o], PIXELS_PER_UNIT)  # accepted, before the work
        pixels = 60 * (1280 * 720 + 854 * 480 + 640 * 360)
        outputs = tuple(keccak256(segment + p) for p in (b"720", b"480", b"360"))
        yield o, k.JobResult(job_id, outputs, pixels, rng.randint(300, 1500))
        nonce = rng.getrandbits(64)
        rand = rng.getrandbits(256)
        commitment = rand_hash(rand)
        ticket = Ticket(o_addr, g_addr, FACE_VALUE, WIN_PROB, nonce, commitment)
        ticket_hash = ticket.hash()
        ticket_sig = sign_ticket(signers[gateway].signer, ticket_hash)
        yield (
            gateway,
            k.TicketIssued(
                ticket_hash,
                o_addr,
                FACE_VALUE,
                WIN_PROB,
                nonce,
                commitment,
                0,
                bytes(32),
                ticket_sig,
                job_id,
            ),
        )
        winning = is_winning(ticket_sig, rand, WIN_PROB)
        yield o, k.TicketReceived(ticket_hash, g_addr, FACE_VALUE, WIN_PROB, winning, job_id)
        accepted = rng.random() < 0.97
        verdict = "ok" if accepted else "psnr below threshold"
        yield gateway, k.JobVerdict(job_id, o_addr, accepted, verdict, rng.randint(400, 3000))
        if winning:
            tx_hash = rng.randbytes(32)
            yield (
                o,
                k.TicketRedeemed(ticket_hash, g_addr, FACE_VALUE, tx_hash, rng.randint(2000, 9000)),
            )
            redemption = k.ChainObserved(
                "redemption", 0, bytes(32), tx_hash, 0, (g_addr, o_addr, FACE_VALUE, ticket_hash)
            )
            yield cast.gateways[0], redemption
        if accepted:
            return
