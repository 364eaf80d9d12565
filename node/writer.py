"""A node's own events: signed in order and published one at a time, so its chains never have a
gap in its own store (an event stored past a gap would be held and never sent).

Network-wide events (offers, chain observations, verdict summaries) are signed by the wallet key
and gossiped. Job-level events are signed in the job chain the wallet keeps with the job's
counterparty (a key derived per pair, `node.keystore.job_signer`, whose chain opens with the
wallet's binding) and go to that counterparty only. A gateway's verdicts are also summed per
orchestrator and published network-wide as a `VerdictSummary` per period (`[gateway]
summary_interval_s`), at the end of a job or live stream, and when the node stops."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import trio

from events import kinds as k
from events.author import Author
from events.crypto import Signer
from events.envelope import SignedEvent, decode
from events.kinds import Body
from node.keystore import open_job_chain
from node.protocol import SUMMARY_EVERY_S as SUMMARY_EVERY_S
from p2p.node import P2PNode
from storage.store import Outcome

log = logging.getLogger("castnet.writer")
LAST_SUMMARY_S = 10.0  # how long a stopping node waits for its last summaries to be published


@dataclass(slots=True)
class _Tally:
    since_ms: int
    verified: int = 0
    failed: int = 0
    latency_ms_total: int = 0


class EventWriter:
    """Signs bodies as `signer` (network-wide) or as its job key towards the counterparty
    (job-level), continuing the chains the node's store already holds."""

    def __init__(
        self, node: P2PNode, signer: Signer, summary_every_s: float = SUMMARY_EVERY_S
    ) -> None:
        self.node = node
        self.signer = signer
        head = node.store.heads().get(signer.address)
        self.author = Author(signer, head)
        self.summary_every_s = summary_every_s
        self._chains: dict[bytes, Author] = {}  # counterparty -> our job chain's author
        self._tallies: dict[bytes, _Tally] = {}  # orchestrator -> verdicts not yet summarized
        self._last_summary = time.monotonic()
        self._floor_ms = 0  # events are stamped at or after the end of the last summary period
        self._lock = trio.Lock()
        node.jobs.own.add(signer.address)

    @property
    def address(self) -> bytes:
        return self.author.address

    async def emit(self, body: Body, to: bytes | None = None) -> SignedEvent:
        """Sign, store durably and send one event (`to`: a job-level event's counterparty, when
        its body does not name it)."""
        (event,) = await self.emit_many([body], to)
        return event

    async def emit_many(self, bodies: list[Body], to: bytes | None = None) -> list[SignedEvent]:
        """Sign, store and send several events in order with one durable append (one commit
        and fsync for all of them)."""
        if not bodies:
            return []
        async with self._lock:
            now = max(int(time.time() * 1000), self._floor_ms)
            events: list[SignedEvent] = []
            signed: list[SignedEvent] = []
            for body in bodies:
                author = await self._author_for(body, to, now, events)
                signed.append(author.sign(body, now))
                events.append(signed[-1])
            results = await self.node.publish_many(events)
            for result in results:
                if result.outcome is not Outcome.APPENDED:
                    raise RuntimeError(f"own event not appended: {result.outcome.value}")
            for body in bodies:
                if isinstance(body, k.JobVerdict):
                    self._count(body, now)
        if self._tallies and time.monotonic() - self._last_summary >= self.summary_every_s:
            await self.flush_summaries()
        return signed

    def counterparty_of(self, event: SignedEvent) -> bytes | None:
        """The counterparty of the job chain that holds `event` (None: network-wide)."""
        return self.node.jobs.counterparty_of(event.author)

    # -- job chains ------------------------------------------------------------------------

    async def _author_for(
        self, body: Body, to: bytes | None, now: int, events: list[SignedEvent]
    ) -> Author:
        """The chain `body` goes in; a job chain new to the store gets its binding first
        (appended to `events`)."""
        if body.KIND not in k.JOB_KINDS:
            return self.author
        counterparty = to or await self._counterparty(body)
        chain = self._chains.get(counterparty)
        if chain is None:
            network = self.node.config.network
            signer, binding = open_job_chain(self.signer, counterparty, network)
            heads = await trio.to_thread.run_sync(self.node.store.heads)
            chain = self._chains[counterparty] = Author(signer, heads.get(signer.address))
            if chain.head is None:
                events.append(chain.sign(binding, now))
        return chain

    async def _counterparty(self, body: Body) -> bytes:
        for name in ("orchestrator", "recipient", "sender"):
            value = getattr(body, name, None)
            if type(value) is bytes:
                return value
        targets = getattr(body, "targets", ())
        if len(targets) == 1:
            return bytes(targets[0])
        job_id = getattr(body, "job_id", None)
        if type(job_id) is bytes:  # a claim or result: towards the job's poster
            raw = await trio.to_thread.run_sync(self.node.store.get, job_id)
            if raw is not None:
                poster = decode(raw).author
                return self.node.jobs.principal_of(poster) or poster
        raise ValueError(f"{body.NAME}: a job-level event needs its counterparty (to=)")

    # -- verdict summaries -----------------------------------------------------------------

    def _count(self, verdict: k.JobVerdict, now_ms: int) -> None:
        orch = verdict.orchestrator
        tally = self._tallies.get(orch)
        if tally is None:
            tally = self._tallies[orch] = _Tally(now_ms)
        if verdict.accepted:
            tally.verified += 1
            tally.latency_ms_total += verdict.latency_ms
        else:
            tally.failed += 1

    async def flush_summaries(self) -> list[SignedEvent]:
        """Publish a VerdictSummary per orchestrator with verdicts not yet summarized (at the
        end of a job, at shutdown, and every `summary_every_s` while verdicts come)."""
        async with self._lock:
            if not self._tallies:
                return []
            now = max(int(time.time() * 1000), self._floor_ms)
            bodies = []
            for orch, t in self._tallies.items():
                until = max(now + 1, t.since_ms + 1)
                self._floor_ms = max(self._floor_ms, until)
                bodies.append(k.VerdictSummary(orch, t.since_ms, until, t.verified, t.failed,
                                               t.latency_ms_total))  # fmt: skip
            self._tallies.clear()
            self._last_summary = time.monotonic()
            events = [self.author.sign(body, now) for body in bodies]
            for result in await self.node.publish_many(events):
                if result.outcome is not Outcome.APPENDED:
                    raise RuntimeError(f"own event not appended: {result.outcome.value}")
            return events

    async def publish_last_summaries(self, timeout_s: float = LAST_SUMMARY_S) -> list[SignedEvent]:
        """When the node stops: publish the verdicts not yet summarized, shielded from the
        cancellation that stops it and bounded by `timeout_s`, so that a clean shutdown loses
        none of them for reputation. One that cannot be published is logged once; the node
        stops anyway."""
        pending = sum(t.verified + t.failed for t in self._tallies.values())
        if not pending:
            return []
        events: list[SignedEvent] = []
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + timeout_s
            try:
                events = await self.flush_summaries()
            except Exception as exc:  # the node's store or host is already gone
                log.warning("%d verdict(s) not summarized at shutdown: %s", pending,
                            str(exc) or type(exc).__name__)  # fmt: skip
                return []
        if scope.cancelled_caught:
            log.warning("%d verdict(s) not summarized at shutdown: publishing took over %g s",
                        pending, timeout_s)  # fmt: skip
        return events
