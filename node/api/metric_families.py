"""The metric families of one node, built at scrape time from its role tallies (folded from its
own log), its p2p nodes, its gateway and orchestrator state, and a chain reading."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)

from events import kinds as k
from events.envelope import decode
from p2p.gossip import DROPS
from p2p.node import P2PNode

TWO_256 = 2**256
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
    seqs: dict[bytes, int] = field(default_factory=dict)  # per chain (main, job chains): last read
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
    inputs: dict[bytes, bytes] = field(default_factory=dict)  # open job -> its segment's hash
    # open segment (input hash) -> (its last assignee, its postings)
    segments: dict[bytes, tuple[bytes, list[bytes]]] = field(default_factory=dict)

    def fold(self, raw: bytes) -> None:
        event = decode(raw)
        self.seq = event.seq
        self.seqs[event.author] = event.seq
        body = k.read_body(event)
        if isinstance(body, k.JobPosted):
            # a segment retried on another orchestrator is posted again, in that pair's job
            # chain: one segment appeared, and its reassignment is a swap
            before = self.segments.get(body.input_hash)
            self.jobs[event.id] = (body.pipeline, before[0] if before else b"")
            self.inputs[event.id] = body.input_hash
            if before is None:
                self.segments[body.input_hash] = (b"", [event.id])
                _inc(self.posted, body.pipeline)
            else:
                before[1].append(event.id)
        elif isinstance(body, k.JobAssigned):
            pipeline, before = self.jobs.get(body.job_id, ("", b""))
            if before and before != body.orchestrator:
                self.swaps += 1
            if pipeline:
                self.jobs[body.job_id] = (pipeline, body.orchestrator)
                segment = self.segments.get(self.inputs.get(body.job_id, b""))
                if segment is not None:
                    self.segments[self.inputs[body.job_id]] = (body.orchestrator, segment[1])
        elif isinstance(body, k.JobVerdict):
            pipeline = self.jobs.get(body.job_id, (TRANSCODE, b""))[0]
            if body.accepted:
                _inc(self.accepted, pipeline)
                self.latency.setdefault(pipeline, Buckets()).observe(body.latency_ms / 1000)
                self.jobs.pop(body.job_id, None)  # a verified segment is not retried
                segment = self.segments.pop(self.inputs.get(body.job_id, b""), None)
                for job in segment[1] if segment else (body.job_id,):  # its earlier postings
                    self.inputs.pop(job, None)
                    self.jobs.pop(job, None)
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


def counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


def gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def histogram(name: str, doc: str, labels: Iterable[str] = ()) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=list(labels))


def role_families(tallies: dict[str, RoleTally]) -> Iterator[Metric]:
    """The history in each role's own log (gateway: posted/verdicts/tickets sent; orchestrator:
    results, tickets received and redeemed)."""
    gw = tallies.get("gateway")
    if gw is not None:
        appeared = counter("castnet_segment_source_appeared", "Segments posted as jobs",
                            ["pipeline"])  # fmt: skip
        done = counter("castnet_segment_transcoded", "Segments whose result was verified",
                        ["pipeline"])  # fmt: skip
        failed = counter(
            "castnet_segment_transcode_failed",
            "Attempts whose result was refused or never came",
            ["pipeline"],
        )
        latency = histogram("castnet_transcode_overall_latency_seconds",
                             "Segment sent to verified result, per verified segment",
                             ["pipeline"])  # fmt: skip
        ai_latency = histogram(
            "castnet_ai_request_latency_seconds", "AI segment sent to verified result", ["pipeline"]
        )
        ai_errors = counter("castnet_ai_request_errors",
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
        swaps = counter(
            "castnet_orchestrator_swaps",
            "Segments moved to another orchestrator after a failed attempt",
        )
        swaps.add_metric([], gw.swaps)
        sent = counter("castnet_tickets_sent", "Tickets issued by the gateway")
        sent.add_metric([], gw.tickets_sent)
        ev_sent = counter(
            "castnet_ticket_value_sent_wei",
            "Expected value of the tickets sent (face value x win probability)",
        )
        ev_sent.add_metric([], gw.ev_sent_wei)
        yield from (swaps, sent, ev_sent)
    orch = tallies.get("orchestrator")
    if orch is not None:
        compute = histogram(
            "castnet_transcode_time_seconds",
            "Compute time of each segment result the orchestrator signed",
        )
        compute.add_metric([], orch.compute.cumulative(), orch.compute.total)
        pixels = counter("castnet_pixels_processed", "Output pixels of signed results")
        pixels.add_metric([], orch.pixels)
        received = counter("castnet_tickets_received", "Valid tickets received")
        received.add_metric([], orch.tickets_received)
        ev = counter("castnet_ticket_value_received_wei",
                      "Expected value of the tickets received")  # fmt: skip
        ev.add_metric([], orch.ev_received_wei)
        won = counter("castnet_winning_tickets_received", "Winning tickets received")
        won.add_metric([], orch.winning_received)
        redeemed = counter("castnet_tickets_redeemed", "Winning tickets redeemed on chain")
        redeemed.add_metric([], orch.redeemed)
        value = counter("castnet_value_redeemed_wei", "Face value of the tickets redeemed")
        value.add_metric([], orch.redeemed_wei)
        yield from (compute, pixels, received, ev, won, redeemed, value)


def p2p_families(nodes: dict[str, P2PNode]) -> Iterator[Metric]:
    """Gossip and log state of each role's p2p node."""
    specs: list[tuple[str, str, Callable[[str], Metric], Callable[[P2PNode], float]]] = [
        ("castnet_gossip_peers", "Connected peers", gauge,
         lambda n: len(n.connected_peers())),
        ("castnet_gossip_mesh_peers", "Peers in the gossip mesh of the network's topic", gauge,
         lambda n: len(n.running.router.mesh.get(n.gossip.topic, ()))),
        ("castnet_peer_exchange_dialed", "Peers dialled because a peer named them", counter,
         lambda n: n.peers.dialed),
        ("castnet_peer_exchange_connected", "Peer exchange dials that connected", counter,
         lambda n: n.peers.connected),
        ("castnet_connections_trimmed", "Idle connections outside the mesh closed over the "
         "peer limit", counter, lambda n: n.trimmer.trimmed),
        ("castnet_gossip_messages_received", "Gossip messages received and accepted", counter,
         lambda n: n.gossip.received),
        ("castnet_gossip_messages_published", "Events published on gossip", counter,
         lambda n: n.gossip.published),
        ("castnet_gossip_rejected", "Messages or events refused from peers", counter,
         lambda n: n.guard.rejected),
        ("castnet_gossip_held_events", "Events held back until their predecessor arrives",
         gauge, lambda n: len(n.ingest.holding)),
        ("castnet_gossip_held_evicted", "Held events given up (sync brings them back)", counter,
         lambda n: n.ingest.holding.evicted),
        ("castnet_log_store_failures", "Gossip messages forwarded whose durable append failed",
         counter, lambda n: n.gossip.store_failures),
        ("castnet_log_events", "Events in the log", gauge, lambda n: n.event_count()),
        ("castnet_log_authors", "Authors in the log", gauge, lambda n: len(n.ingest.heads)),
        ("castnet_log_evidence", "Equivocations found (two events at one author and seq)",
         counter, lambda n: n.ingest.counts.get("equivocation", 0)),
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
    drops = counter(
        "castnet_gossip_dropped",
        "Outbound gossip messages dropped on full peer queues (this process)",
    )
    drops.add_metric([], DROPS.dropped)
    yield drops


def gateway_families(svc: Any) -> Iterator[Metric]:
    runner = getattr(svc, "runner", None)
    if runner is None:
        return
    sessions = gauge("castnet_sessions", "Live streams running")
    sessions.add_metric([], len(runner.live))
    yield sessions
    jobs = gauge("castnet_jobs", "The gateway's API jobs by kind and status", ["kind", "status"])
    counts: dict[tuple[str, str], int] = {}
    for record in runner.book.all():
        key = (record.kind, record.status)
        counts[key] = counts.get(key, 0) + 1
    for (kind, status), n in sorted(counts.items()):
        jobs.add_metric([kind, status], n)
    yield jobs


def orchestrator_families(svc: Any) -> Iterator[Metric]:
    orch = getattr(svc, "orchestrator", None)
    if orch is not None:
        s = orch.stats
        segments = counter(
            "castnet_orchestrator_segments", "Segment requests by what became of them", ["outcome"]
        )
        for outcome, n in (("done", s.jobs), ("refused", s.refused), ("busy", s.busy)):
            segments.add_metric([outcome], n)
        where = counter("castnet_orchestrator_computed_segments",
                         "Segments computed, by where", ["where"])  # fmt: skip
        for place, n in (("local", s.local_segments), ("worker", s.worker_segments),
                         ("ai", s.ai_segments)):  # fmt: skip
            where.add_metric([place], n)
        worker_failures = counter(
            "castnet_worker_failures", "Segments an attached worker failed (finished in-process)"
        )
        worker_failures.add_metric([], s.worker_failures)
        active = gauge("castnet_orchestrator_active_segments", "Segments being computed now")
        active.add_metric([], orch.active)
        pending = gauge("castnet_pending_redemptions", "Winning tickets waiting for redemption")
        pending.add_metric([], orch.pending_redemptions())
        kept = gauge("castnet_orchestrator_kept_results_bytes",
                     "Output bytes of results kept for a restarted gateway to fetch")  # fmt: skip
        kept.add_metric([], orch.results.bytes)
        fetched = counter("castnet_orchestrator_results_fetched",
                          "Results sent again to a gateway that asked after a restart")  # fmt: skip
        fetched.add_metric([], orch.results.fetched)
        yield from (segments, where, worker_failures, active, pending, kept, fetched)
    rewards = getattr(svc, "rewards", None)
    if rewards is not None:
        errors = counter("castnet_reward_call_errors", "Failed reward calls")
        errors.add_metric([], rewards.errors)
        minted = counter("castnet_reward_minted_wei", "Stake minted by this node's reward calls")
        minted.add_metric([], rewards.minted)
        yield from (errors, minted)


def chain_families(chain: ChainReading, svc: Any) -> Iterator[Metric]:
    if chain.block is not None:
        block = gauge("castnet_chain_block", "The chain's latest block number")
        block.add_metric([], chain.block)
        rnd = gauge("castnet_chain_round", "The protocol's current round")
        rnd.add_metric([], chain.round or 0)
        yield from (block, rnd)
    if chain.funds:
        deposit = gauge("castnet_gateway_deposit_wei", "The gateway's ticket broker deposit")
        reserve = gauge("castnet_gateway_reserve_wei", "The gateway's ticket broker reserve")
        for _role, (dep, res) in chain.funds.items():
            deposit.add_metric([], dep)
            reserve.add_metric([], res)
        yield from (deposit, reserve)
    watcher = getattr(svc, "watcher", None)
    if watcher is not None:
        family = counter("castnet_chain_watcher", "Chain watcher activity", ["what"])
        for what in ("emitted", "failures", "reorgs"):
            count = getattr(watcher, what)  # reorgs is the list of the reorgs seen
            family.add_metric([what], len(count) if isinstance(count, list) else count)
        yield family
