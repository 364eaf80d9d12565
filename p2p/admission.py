"""Admission for an open network: which events a node stores and forwards, from whom, how fast.

An event is admitted when its author has **standing** at this node:
- the author is one of this node's own (it published an event through this node), or had events
  in the store when the node started (stored before, or imported by the operator);
- the author is bonded (a delegator or an orchestrator named by a stored `bond`, `rebond`,
  `bonded`, `rebonded` or `reward` observation) or holds a deposit (`deposit`, `reserve`);
- the author is the counterparty of a job this node takes part in: its event names one of this
  node's own addresses (a job's target or assignee, a ticket's recipient or sender) or one of the
  jobs they posted.

A chain observation that names its own author as a party (a delegator logging its bond, a
gateway its deposit) is admitted without standing, within a small per-peer budget for
newcomers, and gives the standing it records; `castnet audit --rpc` checks it against the chain.

Job-level events (a pair's job chain: job postings, claims, assignments, results, verdicts,
tickets and the chain's binding) are never admitted from the topic or a default sync, whoever
relays them and in either mode (a default sync still carries the job events of a log written
before job chains, signed by the wallet in its one chain): they travel to the counterparty only
(`p2p.jobchains`); the peer that relays them is penalized as for junk.

Admitted events also pass a token bucket per author; everything from one peer without standing
passes a bucket per peer. What is held back is counted by reason, costs the relaying peer
penalty points (past the threshold it is disconnected and refused), and is logged once per period.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from events import kinds as k
from events.envelope import SignedEvent, decode
from events.errors import EventError
from p2p.jobchains import JobChains
from storage.store import EventStore

log = logging.getLogger("castnet.p2p.admission")

NO_STANDING = "no-standing"
JOB_EVENT = "job-event-flooded"  # a job chain's event on the topic: it goes to its counterparty
AUTHOR_RATE = "author-rate"
PEER_RATE = "peer-rate"
_BONDING = frozenset({"bond", "rebond", "bonded", "rebonded"})
_FUNDING = frozenset({"deposit", "reserve"})
_MAX_TRACKED = 100_000  # buckets kept per kind (peers, authors); the oldest are forgotten


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    author_rate: float = 500.0  # events/s per author with standing
    author_burst: float = 5_000.0
    newcomer_rate: float = 2.0  # self-claimed observations/s per peer, authors without standing
    newcomer_burst: float = 20.0
    penalty: float = 0.2  # points per gossip message with held-back events
    report_every_s: float = 10.0


class TokenBucket:
    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, now

    def take(self, now: float, n: float = 1.0) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


def _parties(body: k.ChainObserved) -> tuple[bytes, ...]:
    """The addresses an observation gives standing to (none for other kinds of log)."""
    args = body.args
    if body.what in _BONDING and len(args) >= 2:
        return tuple(a for a in args[:2] if type(a) is bytes)
    if body.what == "reward" and args and type(args[0]) is bytes:
        return (args[0],)
    if body.what in _FUNDING and args and type(args[0]) is bytes:
        return (args[0],)
    return ()


def _named(body: k.Body) -> tuple[bytes, ...]:
    """Addresses and job ids an event names as its counterparties."""
    out: list[bytes] = []
    for name in ("orchestrator", "recipient", "sender", "job_id"):
        value = getattr(body, name, None)
        if type(value) is bytes:
            out.append(value)
    targets = getattr(body, "targets", ())
    if isinstance(targets, tuple):
        out.extend(t for t in targets if type(t) is bytes)
    return tuple(out)


class Admission:
    """The rule above, for one node. `check` decides one event (and learns the standing it
    gives); `held` counts what was refused, by reason."""

    def __init__(
        self,
        config: AdmissionConfig | None = None,
        *,
        by_standing: bool = True,
        jobs: JobChains | None = None,
    ) -> None:
        self.config = config or AdmissionConfig()
        self.by_standing = by_standing  # False: an open network, only job events are refused
        self.jobs = jobs
        self.standing: set[bytes] = set()
        self.local: set[bytes] = set()
        self.local_jobs: set[bytes] = set()
        self.held: Counter[str] = Counter()
        self.admitted = 0
        self._authors: dict[bytes, TokenBucket] = {}
        self._peers: dict[str, TokenBucket] = {}
        self._reported: Counter[str] = Counter()
        self._last_report = -1e18

    # -- learning --------------------------------------------------------------------------

    def load(self, store: EventStore) -> None:
        """Standing from what the store already holds (blocking: run in a thread)."""
        self.standing.update(store.heads())
        for _, raw in store.read():
            event = decode(raw)
            if event.kind == k.ChainObserved.KIND:
                body = k.read_body(event)
                if isinstance(body, k.ChainObserved):
                    self.standing.update(_parties(body))

    def own(self, event: SignedEvent) -> None:
        """An event this node publishes: its author is ours, and so are the jobs it posts; a
        chain observation it logs (its chain watcher's) gives the standing it records."""
        self.local.add(event.author)
        self.standing.add(event.author)
        if event.kind == k.JobPosted.KIND:
            self.local_jobs.add(event.id)
        self._learn(event)

    # -- deciding --------------------------------------------------------------------------

    def check(self, event: SignedEvent, peer: str, now: float) -> str | None:
        """None to admit `event` relayed by `peer`, else the reason it is held back."""
        author = event.author
        body = None
        if author not in self.standing:
            body = k.read_body(event)
            if body is None:
                return self._hold(NO_STANDING)
            if isinstance(body, k.ChainObserved) and author in _parties(body):
                if not self._bucket(self._peers, peer, now, author=False).take(now):
                    return self._hold(PEER_RATE)
            elif not any(n in self.local or n in self.local_jobs for n in _named(body)):
                return self._hold(NO_STANDING)
            self.standing.add(author)  # self-claimed standing, or a counterparty of our jobs
        if not self._bucket(self._authors, author, now, author=True).take(now):
            return self._hold(AUTHOR_RATE)
        self._learn(event, body)
        self.admitted += 1
        return None

    def _learn(self, event: SignedEvent, body: k.Body | None = None) -> None:
        if event.kind == k.ChainObserved.KIND:
            body = body or k.read_body(event)
            if isinstance(body, k.ChainObserved):
                self.standing.update(_parties(body))

    def _bucket(self, buckets: dict, key: object, now: float, *, author: bool) -> TokenBucket:
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= _MAX_TRACKED:
                buckets.pop(next(iter(buckets)))
            c = self.config
            rate, burst = (
                (c.author_rate, c.author_burst) if author else (c.newcomer_rate, c.newcomer_burst)
            )
            bucket = buckets[key] = TokenBucket(rate, burst, now)
        return bucket

    def _hold(self, reason: str) -> str:
        self.held[reason] += 1
        return reason

    def report(self, now: float) -> None:
        """Log what was held back since the last report, at most once per period."""
        if now - self._last_report < self.config.report_every_s:
            return
        new = self.held - self._reported
        if new:
            self._last_report = now
            self._reported = Counter(self.held)
            parts = ", ".join(f"{n} {reason}" for reason, n in sorted(new.items()))
            log.warning("held back events (not stored, not forwarded): %s", parts)

    def summary(self) -> dict[str, object]:
        return {
            "admitted": self.admitted,
            "held_back": dict(self.held),
            "authors_with_standing": len(self.standing),
        }

    def filter(
        self, events: Iterable[SignedEvent], peer: str, now: float, *, topic: bool = True
    ) -> tuple[list[SignedEvent], int]:
        """The admitted events of a batch, in order, and how many were held back.

        The standing that the batch's chain observations give is learned first (self-claimed
        ones within the peer's budget, as `check` decides them): an orchestrator's Offer that
        precedes the observation of its bond in a log is then admitted in its place, so a
        batch fetched by sync keeps its log order (a gateway's assignment stays after the
        Offer it names) instead of admitting the Offer later, out of order."""
        batch = []
        refused = 0
        for event in events:
            if self._job_event(event, topic):
                refused += 1
                self._hold(JOB_EVENT)
            else:
                batch.append(event)
        if not self.by_standing:
            self.admitted += len(batch)
            if refused:
                self.report(now)
            return batch, refused
        decided: dict[int, str | None] = {}
        observed: list[tuple[SignedEvent, tuple[bytes, ...]]] = []
        for i, event in enumerate(batch):
            parties = self._observed_parties(event)
            if not parties:
                continue
            if event.author not in self.standing and event.author in parties:
                decided[i] = self.check(event, peer, now)
            else:
                observed.append((event, parties))
        learned = True
        while learned and observed:  # an observer may gain standing from a later observation
            learned, waiting = False, []
            for event, parties in observed:
                if event.author in self.standing:
                    self.standing.update(parties)
                    learned = True
                else:
                    waiting.append((event, parties))
            observed = waiting
        admitted, held = [], refused
        for i, event in enumerate(batch):
            reason = decided[i] if i in decided else self.check(event, peer, now)
            if reason is None:
                admitted.append(event)
            else:
                held += 1
        self.report(now)
        return admitted, held

    def _job_event(self, event: SignedEvent, topic: bool) -> bool:
        """Whether `event` belongs to a job chain, which is never flooded. On the topic every
        job-level kind is; by default sync (`topic` False) only a binding and the events of a
        known job chain, so a log written before job chains (one chain per node, its job
        events signed by the wallet) still syncs whole."""
        if event.kind == k.JobChainOpened.KIND:
            return True
        if self.jobs is not None and event.author in self.jobs.bindings:
            return True
        return topic and event.kind in k.JOB_KINDS

    @staticmethod
    def _observed_parties(event: SignedEvent) -> tuple[bytes, ...]:
        """The addresses a chain observation gives standing to (none for other events)."""
        if event.kind != k.ChainObserved.KIND:
            return ()
        try:
            body = k.read_body(event)
        except EventError:
            return ()
        return _parties(body) if isinstance(body, k.ChainObserved) else ()
