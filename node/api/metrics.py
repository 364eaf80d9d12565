"""Prometheus metrics of one castnet process (`GET /metrics`), with prometheus_client.

Nothing in the roles calls into this module. What a role did is read from its own signed log
(the events it authored: `JobPosted`, `JobVerdict`, `JobResult`, `TicketIssued`,
`TicketReceived`, `TicketRedeemed`), folded into tallies as the log grows; what is state rather
than history (peers, gossip and store counters, queue lengths, chain block and round, deposits)
is read at scrape time. The log is caught up and the chain read in worker threads before the
registry is rendered in the trio thread, so a scrape never blocks the loop and never reads
state that another thread is changing. Counters follow the log, so they survive restarts.

The families follow go-livepeer's (segments appeared / transcoded / failed, transcode time,
overall latency, sessions, orchestrator swaps, tickets, winning tickets, value redeemed, deposit
and reserve, reward call errors, pixels, AI request latency and errors) under `castnet_` names,
plus gossip, log and chain families. A worker process serves its own counters the same way.

The collectors read a node through a few attributes (`NodeParts`): a NodeService has them, and
so does each node of an in-process network (`castnet demo`), whose nodes' families one endpoint
serves with a `node` label (`NetworkMetrics`)."""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from events import kinds as k
from events.envelope import decode
from p2p.gossip import DROPS
from p2p.node import P2PNode

log = logging.getLogger("castnet.metrics")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TWO_256 = 2**256
CHAIN_READ_S = 5.0  # a chain that does not answer in time leaves its gauges out of the scrape
READ_BATCH = 1000
# seconds; segments are 2 s long, so the interesting range is 0.1 s .. 1 min
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0)
TRANSCODE = "transcode"


@dataclass(slots=True)
class Buckets:
    """A histogram's state: counts per upper bound (the last is +Inf), and the sum."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        counts = self.counts or [0] * (len(self.bounds) + 1)
        out, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out


@dataclass(slots=True)
class RoleTally:
    """What one role's own events say it did, folded incrementally (`seq` is the last read)."""

    seq: int = 0
    posted: dict[str, int] = field(default_factory=dict)  # pipeline -> segments appeared
    accepted: dict[str, int] = field(default_factory=dict)  # pipeline -> verified results
    rejected: dict[str, int] = field(default_factory=dict)  # pipeline -> failed attempts
    latency: dict[str, Buckets] = field(default_factory=dict)  # pipeline -> accepted latency
    swaps: int = 0  # a segment assigned to another orchestrator after a failed attempt
    tickets_sent: int = 0
    ev_sent_wei: float = 0.0
    results: int = 0
    compute: Buckets = field(default_factory=Buckets)
    pixels: int = 0
    tickets_received: int = 0
    ev_received_wei: float = 0.0
    winning_received: int = 0
    redeemed: int = 0
    redeemed_wei: int = 0
    jobs: dict[bytes, tuple[str, bytes]] = field(default_factory=dict)  # open: pipeline, assignee

    def fold(self, raw: bytes) -> None:
        event = decode(raw)
        self.seq = event.seq
        body = k.read_body(event)
        if isinstance(body, k.JobPosted):
            self.jobs[event.id] = (body.pipeline, b"")
            _inc(self.posted, body.pipeline)
        elif isinstance(body, k.JobAssigned):
            pipeline, before = self.jobs.get(body.job_id, ("", b""))
            if before and before != body.orchestrator:
                self.swaps += 1
            if pipeline:
                self.jobs[body.job_id] = (pipeline, body.orchestrator)
        elif isinstance(body, k.JobVerdict):
            pipeline = self.jobs.get(body.job_id, (TRANSCODE, b""))[0]
            if body.accepted:
                _inc(self.accepted, pipeline)
                self.latency.setdefault(pipeline, Buckets()).observe(body.latency_ms / 1000)
                self.jobs.pop(body.job_id, None)  # a verified segment is not retried
            else:
                _inc(self.rejected, pipeline)
        elif isinstance(body, k.JobResult):
            self.results += 1
            self.compute.observe(body.compute_ms / 1000)
            self.pixels += body.output_pixels
        elif isinstance(body, k.TicketIssued):
            self.tickets_sent += 1
            self.ev_sent_wei += body.face_value * body.win_prob / TWO_256
        elif isinstance(body, k.TicketReceived):
            self.tickets_received += 1
            self.ev_received_wei += body.face_value * body.win_prob / TWO_256
            self.winning_received += bool(body.winning)
        elif isinstance(body, k.TicketRedeemed):
            self.redeemed += 1
            self.redeemed_wei += body.face_value


def _inc(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


@dataclass(slots=True)
class ChainReading:
    block: int | None = None
    round: int | None = None
    funds: dict[str, tuple[int, int]] = field(default_factory=dict)  # role -> deposit, reserve


@dataclass(slots=True)
class NodeParts:
    """What the collectors read of one node: its role members (role -> an object with `.node`,
    a started P2PNode, and `.signer`), and where the node has them its ledger, orchestrator,
    reward caller, job runner and chain watcher. A NodeService has these attributes itself."""

    members: dict[str, Any]
    ledger: Any = None
    orchestrator: Any = None
    rewards: Any = None
    runner: Any = None
    watcher: Any = None


class NodeMetrics:
    """The metrics of one node (a NodeService, or NodeParts): `await render()` for the
    exposition."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.tallies: dict[str, RoleTally] = {}
        self.chain = ChainReading()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_NodeCollector(self))
        self._lock = trio.Lock()

    async def refresh(self) -> None:
        """Fold each role's new own events and read the chain, in threads."""
        for role, member in list(self.service.members.items()):
            tally = self.tallies.setdefault(role, RoleTally())
            await trio.to_thread.run_sync(_catch_up, member.node, member.signer.address, tally)
        self.chain = ChainReading()
        ledger = getattr(self.service, "ledger", None)
        if ledger is None:
            return
        senders = {"gateway": self.service.members["gateway"].signer.address} if (
            "gateway" in self.service.members) else {}  # fmt: skip
        with trio.move_on_after(CHAIN_READ_S) as scope:
            self.chain = await trio.to_thread.run_sync(
                _read_chain, ledger, senders, abandon_on_cancel=True
            )
        if scope.cancelled_caught:
            log.warning("the chain did not answer within %g s: chain metrics left out",
                        CHAIN_READ_S)  # fmt: skip

    async def render(self) -> bytes:
        async with self._lock:
            try:
                await self.refresh()
            except Exception:  # a broken read must not take /metrics down: show what we have
                log.exception("metrics refresh failed")
            return generate_latest(self.registry)


# families that count for the whole process, not one node: a multi-node endpoint shows them once
PROCESS_WIDE = frozenset({"castnet_gossip_dropped"})


class NetworkMetrics:
    """The metrics of several nodes in one process (the demo's network) on one endpoint: every
    node's families as NodeMetrics gives them, each sample labelled `node="<name>"` (as one
    scrape target with a label per node, the way an exporter for several things does), the
    process-wide families once, unlabelled. A node for which `alive(name)` is false (stopped)
    is left out of the scrape."""

    def __init__(self, nodes: dict[str, Any], alive: Callable[[str], bool] | None = None) -> None:
        self.nodes = {name: NodeMetrics(parts) for name, parts in nodes.items()}
        self.alive = alive or (lambda name: True)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_LabelledCollector(self))
        self._lock = trio.Lock()

    def live(self) -> dict[str, NodeMetrics]:
        return {name: m for name, m in self.nodes.items() if self.alive(name)}

    async def render(self) -> bytes:
        async with self._lock:
            for name, metrics in self.live().items():
                try:
                    await metrics.refresh()
                except Exception:  # one node's broken read must not take /metrics down
                    log.exception("metrics refresh of %s failed", name)
            return generate_latest(self.registry)


class _LabelledCollector(Collector):
    def __init__(self, network: NetworkMetrics) -> None:
        self.network = network

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for name, metrics in self.network.live().items():
            for family in metrics.registry.collect():
                if family.name in PROCESS_WIDE:
                    merged.setdefault(family.name, family)
                    continue
                target = merged.get(family.name)
                if target is None:
                    target = Metric(family.name, family.documentation, family.type, family.unit)
                    merged[family.name] = target
                for sample in family.samples:
                    target.samples.append(sample._replace(labels={"node": name, **sample.labels}))
        yield from merged.values()


def _catch_up(node: P2PNode, author: bytes, tally: RoleTally) -> None:
    while True:
        raws = node.store.read_author(author, after_seq=tally.seq, limit=READ_BATCH)
        for raw in raws:
            tally.fold(raw)
        if len(raws) < READ_BATCH:
            return


def _read_chain(ledger: Any, senders: dict[str, bytes]) -> ChainReading:
    view = ledger.view()
    reading = ChainReading(block=view.block, round=view.round)
    for role, address in senders.items():
        info = ledger.sender_info(address, address)
        reading.funds[role] = (info.deposit, info.reserve)
    return reading


class _NodeCollector(Collector):
    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m, svc = self.metrics, self.metrics.service
        yield from _role_families(m.tallies)
        yield from _p2p_families({role: member.node for role, member in svc.members.items()})
        yield from _gateway_families(svc)
        yield from _orchestrator_families(svc)
        yield from _chain_families(m.chain, svc)


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _histogram(name: str, doc: str, labels: Iterable[str] = ()) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=list(labels))


def _role_families(tallies: dict[str, RoleTally]) -> Iterator[Metric]:
    """The history in each role's own log (gateway: posted/verdicts/tickets sent; orchestrator:
    results, tickets received and redeemed)."""
    gw = tallies.get("gateway")
    if gw is not None:
        appeared = _counter("castnet_segment_source_appeared", "Segments posted as jobs",
                            ["pipeline"])  # fmt: skip
        done = _counter("castnet_segment_transcoded", "Segments whose result was verified",
                        ["pipeline"])  # fmt: skip
        failed = _counter(
            "castnet_segment_transcode_failed",
            "Attempts whose result was refused or never came",
            ["pipeline"],
        )
        latency = _histogram("castnet_transcode_overall_latency_seconds",
                             "Segment sent to verified result, per verified segment",
                             ["pipeline"])  # fmt: skip
        ai_latency = _histogram(
            "castnet_ai_request_latency_seconds", "AI segment sent to verified result", ["pipeline"]
        )
        ai_errors = _counter("castnet_ai_request_errors",
                             "AI attempts refused or failed", ["pipeline"])  # fmt: skip
        for pipeline in sorted(set(gw.posted) | {TRANSCODE}):
            appeared.add_metric([pipeline], gw.posted.get(pipeline, 0))
            done.add_metric([pipeline], gw.accepted.get(pipeline, 0))
            failed.add_metric([pipeline], gw.rejected.get(pipeline, 0))
            buckets = gw.latency.get(pipeline, Buckets())
            target = latency if pipeline == TRANSCODE else ai_latency
            target.add_metric([pipeline], buckets.cumulative(), buckets.total)
            if pipeline != TRANSCODE:
                ai_errors.add_metric([pipeline], gw.rejected.get(pipeline, 0))
        yield from (appeared, done, failed, latency, ai_latency, ai_errors)
        swaps = _counter(
            "castnet_orchestrator_swaps",
            "Segments moved to another orchestrator after a failed attempt",
        )
        swaps.add_metric([], gw.swaps)
        sent = _counter("castnet_tickets_sent", "Tickets issued by the gateway")
        sent.add_metric([], gw.tickets_sent)
        ev_sent = _counter(
            "castnet_ticket_value_sent_wei",
            "Expected value of the tickets sent (face value x win probability)",
        )
        ev_sent.add_metric([], gw.ev_sent_wei)
        yield from (swaps, sent, ev_sent)
    orch = tallies.get("orchestrator")
    if orch is not None:
        compute = _histogram(
            "castnet_transcode_time_seconds",
            "Compute time of each segment result the orchestrator signed",
        )
        compute.add_metric([], orch.compute.cumulative(), orch.compute.total)
        pixels = _counter("castnet_pixels_processed", "Output pixels of signed results")
        pixels.add_metric([], orch.pixels)
        received = _counter("castnet_tickets_received", "Valid tickets received")
        received.add_metric([], orch.tickets_received)
        ev = _counter("castnet_ticket_value_received_wei",
                      "Expected value of the tickets received")  # fmt: skip
        ev.add_metric([], orch.ev_received_wei)
        won = _counter("castnet_winning_tickets_received", "Winning tickets received")
        won.add_metric([], orch.winning_received)
        redeemed = _counter("castnet_tickets_redeemed", "Winning tickets redeemed on chain")
        redeemed.add_metric([], orch.redeemed)
        value = _counter("castnet_value_redeemed_wei", "Face value of the tickets redeemed")
        value.add_metric([], orch.redeemed_wei)
        yield from (compute, pixels, received, ev, won, redeemed, value)


def _p2p_families(nodes: dict[str, P2PNode]) -> Iterator[Metric]:
    """Gossip and log state of each role's p2p node."""
    specs: list[tuple[str, str, Callable[[str], Metric], Callable[[P2PNode], float]]] = [
        ("castnet_gossip_peers", "Connected peers", _gauge,
         lambda n: len(n.connected_peers())),
        ("castnet_gossip_messages_received", "Gossip messages received and accepted", _counter,
         lambda n: n.gossip.received),
        ("castnet_gossip_messages_published", "Events published on gossip", _counter,
         lambda n: n.gossip.published),
        ("castnet_gossip_rejected", "Messages or events refused from peers", _counter,
         lambda n: n.guard.rejected),
        ("castnet_gossip_held_events", "Events held back until their predecessor arrives",
         _gauge, lambda n: len(n.ingest.holding)),
        ("castnet_gossip_held_evicted", "Held events given up (sync brings them back)", _counter,
         lambda n: n.ingest.holding.evicted),
        ("castnet_log_events", "Events in the log", _gauge, lambda n: n.event_count()),
        ("castnet_log_authors", "Authors in the log", _gauge, lambda n: len(n.ingest.heads)),
        ("castnet_log_evidence", "Equivocations found (two events at one author and seq)",
         _counter, lambda n: n.ingest.counts.get("equivocation", 0)),
    ]  # fmt: skip
    for name, doc, kind, read in specs:
        family = kind(name, doc, ["role"])  # type: ignore[call-arg]
        for role, node in nodes.items():
            if hasattr(node, "ingest"):  # started
                family.add_metric([role], read(node))
        yield family
    append = SummaryMetricFamily("castnet_log_append_seconds",
                                 "Durable appends (SQLite transactions) and their time",
                                 labels=["role"])  # fmt: skip
    for role, node in nodes.items():
        if hasattr(node, "ingest"):
            service = node.ingest.service
            append.add_metric([role], service.commits, service.commit_seconds)
    yield append
    drops = _counter(
        "castnet_gossip_dropped",
        "Outbound gossip messages dropped on full peer queues (this process)",
    )
    drops.add_metric([], DROPS.dropped)
    yield drops


def _gateway_families(svc: Any) -> Iterator[Metric]:
    runner = getattr(svc, "runner", None)
    if runner is None:
        return
    sessions = _gauge("castnet_sessions", "Live streams running")
    sessions.add_metric([], len(runner.live))
    yield sessions
    jobs = _gauge("castnet_jobs", "The gateway's API jobs by kind and status", ["kind", "status"])
    counts: dict[tuple[str, str], int] = {}
    for record in runner.book.all():
        key = (record.kind, record.status)
        counts[key] = counts.get(key, 0) + 1
    for (kind, status), n in sorted(counts.items()):
        jobs.add_metric([kind, status], n)
    yield jobs


def _orchestrator_families(svc: Any) -> Iterator[Metric]:
    orch = getattr(svc, "orchestrator", None)
    if orch is not None:
        s = orch.stats
        segments = _counter(
            "castnet_orchestrator_segments", "Segment requests by what became of them", ["outcome"]
        )
        for outcome, n in (("done", s.jobs), ("refused", s.refused), ("busy", s.busy)):
            segments.add_metric([outcome], n)
        where = _counter("castnet_orchestrator_computed_segments",
                         "Segments computed, by where", ["where"])  # fmt: skip
        for place, n in (("local", s.local_segments), ("worker", s.worker_segments),
                         ("ai", s.ai_segments)):  # fmt: skip
            where.add_metric([place], n)
        worker_failures = _counter(
            "castnet_worker_failures", "Segments an attached worker failed (finished in-process)"
        )
        worker_failures.add_metric([], s.worker_failures)
        active = _gauge("castnet_orchestrator_active_segments", "Segments being computed now")
        active.add_metric([], orch.active)
        pending = _gauge("castnet_pending_redemptions", "Winning tickets waiting for redemption")
        pending.add_metric([], orch.pending_redemptions())
        yield from (segments, where, worker_failures, active, pending)
    rewards = getattr(svc, "rewards", None)
    if rewards is not None:
        errors = _counter("castnet_reward_call_errors", "Failed reward calls")
        errors.add_metric([], rewards.errors)
        minted = _counter("castnet_reward_minted_wei", "Stake minted by this node's reward calls")
        minted.add_metric([], rewards.minted)
        yield from (errors, minted)


def _chain_families(chain: ChainReading, svc: Any) -> Iterator[Metric]:
    if chain.block is not None:
        block = _gauge("castnet_chain_block", "The chain's latest block number")
        block.add_metric([], chain.block)
        rnd = _gauge("castnet_chain_round", "The protocol's current round")
        rnd.add_metric([], chain.round or 0)
        yield from (block, rnd)
    if chain.funds:
        deposit = _gauge("castnet_gateway_deposit_wei", "The gateway's ticket broker deposit")
        reserve = _gauge("castnet_gateway_reserve_wei", "The gateway's ticket broker reserve")
        for _role, (dep, res) in chain.funds.items():
            deposit.add_metric([], dep)
            reserve.add_metric([], res)
        yield from (deposit, reserve)
    watcher = getattr(svc, "watcher", None)
    if watcher is not None:
        family = _counter("castnet_chain_watcher", "Chain watcher activity", ["what"])
        for what in ("emitted", "failures", "reorgs"):
            count = getattr(watcher, what)  # reorgs is the list of the reorgs seen
            family.add_metric([what], len(count) if isinstance(count, list) else count)
        yield family


class WorkerMetrics:
    """A `castnet worker`'s counters (node.orchestrator.worker.WorkerStats)."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_WorkerCollector(worker))

    async def render(self) -> bytes:
        return generate_latest(self.registry)


class _WorkerCollector(Collector):
    def __init__(self, worker: Any) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        s = self.worker.stats
        family = _counter("castnet_worker_segments", "Segments by what became of them",
                          ["outcome"])  # fmt: skip
        for outcome, n in (("done", s.segments), ("refused", s.refused), ("failed", s.failed)):
            family.add_metric([outcome], n)
        registrations = _counter(
            "castnet_worker_registrations", "Times this worker registered with its orchestrator"
        )
        registrations.add_metric([], s.registrations)
        active = _gauge("castnet_worker_active_segments", "Segments being computed now")
        active.add_metric([], self.worker.active)
        yield from (family, registrations, active)
