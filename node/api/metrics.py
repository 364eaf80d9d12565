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

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    Metric,
)
from prometheus_client.registry import Collector

from node.api.metric_families import (
    ChainReading,
    RoleTally,
    chain_families,
    counter,
    gateway_families,
    gauge,
    orchestrator_families,
    p2p_families,
    role_families,
)
from p2p.node import P2PNode

log = logging.getLogger("castnet.metrics")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CHAIN_READ_S = 5.0  # a chain that does not answer in time leaves its gauges out of the scrape
READ_BATCH = 1000


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
            own_chains = [a for a, b in list(member.node.jobs.bindings.items())
                          if b.principal == member.signer.address]  # fmt: skip
            for chain in own_chains:  # its job-level events: one job chain per counterparty
                await trio.to_thread.run_sync(_catch_up, member.node, chain, tally)
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
        raws = node.store.read_author(author, after_seq=tally.seqs.get(author, 0), limit=READ_BATCH)
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
        yield from role_families(m.tallies)
        yield from p2p_families({role: member.node for role, member in svc.members.items()})
        yield from gateway_families(svc)
        yield from orchestrator_families(svc)
        yield from chain_families(m.chain, svc)


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
        family = counter("castnet_worker_segments", "Segments by what became of them",
                          ["outcome"])  # fmt: skip
        for outcome, n in (("done", s.segments), ("refused", s.refused), ("failed", s.failed)):
            family.add_metric([outcome], n)
        registrations = counter(
            "castnet_worker_registrations", "Times this worker registered with its orchestrator"
        )
        registrations.add_metric([], s.registrations)
        active = gauge("castnet_worker_active_segments", "Segments being computed now")
        active.add_metric([], self.worker.active)
        yield from (family, registrations, active)
