"""A castnet p2p node as one trio service: the event store's writer, the libp2p host, gossip,
sync, bootstrap redialing and peer bookkeeping, started in order and closed in reverse."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.network.stream.net_stream import INetStream
from libp2p.peer.id import ID

from events.envelope import SignedEvent
from p2p.addrs import dial_problem
from p2p.admission import Admission
from p2p.config import P2PConfig
from p2p.connections import abort_connections
from p2p.discovery import PEERS_PROTOCOL, PeerExchange
from p2p.errors import P2PError, StreamClosed, StreamTimeout
from p2p.framing import MessageStream
from p2p.gossip import Gossip, events_topic, install_drop_counter
from p2p.guard import PeerGuard
from p2p.holding import Holding
from p2p.host import RunningHost, running_host
from p2p.identity import load_or_create_identity, peer_id_of
from p2p.ingest import Ingest
from p2p.jobchains import JobChains
from p2p.peers import CONNECTED, PeerEvents, parse_peer_addr
from p2p.scoring import PeerScores
from p2p.sync import SYNC_PROTOCOL, Sync, verify_batch
from p2p.trim import Trimmer
from storage.service import StoreService
from storage.store import AppendResult, EventStore, Outcome

log = logging.getLogger("castnet.p2p.node")
INFO_FILE = "p2p-info.json"
# a stopping node whose close still waits this long aborts its connections (_bound_the_close)
CLOSE_GRACE_S = 5.0
BOOTSTRAP_TRIES = 3  # rounds of dials before a node that requires a bootstrap peer gives up
# a job chain's new events, pushed to the counterparty: `[1, [raw, ...]]`, no answer
JOBS_PROTOCOL = TProtocol("/castnet/jobs/1")
JOBS_PUSH = 1
PUSH_QUEUE = 4096  # events waiting to be pushed; past it the counterparty fetches them instead


class P2PNode:
    """Start with `await nursery.start(node.run)` (or `open_node`); the attributes below the
    constructor's exist once it has started."""

    def __init__(
        self, data_dir: str | Path, config: P2PConfig, store: EventStore | None = None
    ) -> None:
        self.data_dir = Path(data_dir)
        self.config = config
        self.key_pair = load_or_create_identity(self.data_dir)
        self.peer_id = peer_id_of(self.key_pair).to_base58()
        self.store = store if store is not None else EventStore.open_dir(self.data_dir)
        self._own_store = store is None
        self._closed = False
        self.addrs: list[str] = []
        self.running: RunningHost
        self.ingest: Ingest
        self.guard: PeerGuard
        self.gossip: Gossip
        self.sync: Sync
        self.peers: PeerExchange
        self.trimmer: Trimmer
        # job chains: who holds which, and where their new events go (never to the topic)
        self.jobs = JobChains(config.network)
        # admission by standing, or (an open network) only the refusal of job events on the topic
        self.admission = Admission(by_standing=config.admission, jobs=self.jobs)
        self.pushed = 0  # job chain events pushed to counterparties
        self.push_dropped = 0  # not pushed (no known peer, a full queue, a failed stream)
        self._push_send, self._push_receive = trio.open_memory_channel[tuple[ID, bytes]](PUSH_QUEUE)
        for addr in config.bootstrap:
            parse_peer_addr(addr)  # refuse a bad --bootstrap before anything starts

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        install_drop_counter()
        service = StoreService(self.store)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(service.run)
                await trio.to_thread.run_sync(self.jobs.load, self.store)
                if self.admission is not None and self.admission.by_standing:
                    await trio.to_thread.run_sync(self.admission.load, self.store)
                holding = Holding(self.config.held_max_events, self.config.held_ttl_s)
                self.ingest = Ingest(service, holding)
                topics = frozenset({events_topic(self.config.network)})
                async with running_host(
                    self.key_pair, self.config, topics, self._before_listen
                ) as running:
                    self.addrs = running.addrs()
                    peer_send, peer_receive = trio.open_memory_channel[tuple[str, ID]](1024)
                    running.host.get_network().register_notifee(PeerEvents(peer_send))
                    async with trio.open_nursery() as inner:
                        inner.start_soon(self._bound_the_close)
                        await inner.start(self.sync.run)
                        await inner.start(self.gossip.run)
                        inner.start_soon(self._watch_peers, peer_receive)
                        inner.start_soon(self._push_jobs)
                        if self.config.require_bootstrap and self.config.bootstrap:
                            await self._reach_bootstrap()
                        inner.start_soon(self._bootstrap)
                        if self.config.peers_target > 0:
                            inner.start_soon(self.peers.run)
                        if self.config.max_peers > 0:
                            inner.start_soon(self.trimmer.run)
                        self._write_info()
                        inner.start_soon(self._report)
                        log.info("p2p node %s on network %r", self.peer_id, self.config.network)
                        for addr in self.addrs:
                            log.info("listening on %s", addr)
                        task_status.started(self)
                        await trio.sleep_forever()
        finally:
            self._closed = True
            running = getattr(self, "running", None)
            if running is not None:  # a stop is a cancellation, and py-libp2p's close under it
                # left the sockets open: its peers kept a live connection to a node long gone
                with contextlib.suppress(Exception):
                    abort_connections(running.host)
            service.close()
            if self._own_store:
                self.store.close()

    async def _bound_the_close(self) -> None:
        """Once the node stops: if its close still waits after CLOSE_GRACE_S (py-libp2p writes a
        failed stream's reset to a peer, shielded from cancellation; a peer that no longer reads
        holds it for good), its connections are aborted."""
        try:
            await trio.sleep_forever()
        finally:
            trio.lowlevel.spawn_system_task(self._abort_if_still_closing)

    async def _abort_if_still_closing(self) -> None:
        await trio.sleep(CLOSE_GRACE_S)
        if self._closed:
            return
        try:
            aborted = abort_connections(self.running.host)
        except Exception:  # a library's internals moved: the close goes on as it can
            log.exception("could not abort the connections of a stuck close")
            return
        log.warning("the node's close still waited on a peer after %g s: %d connection(s) "
                    "aborted", CLOSE_GRACE_S, aborted)  # fmt: skip

    def _before_listen(self, running: RunningHost) -> None:
        """Wire the protocol handlers before the host accepts its first connection."""
        self.running = running
        config = self.config
        scores = PeerScores(config.ban_threshold, config.score_half_life_s, config.ban_s)
        self.guard = PeerGuard(running, scores)
        self.sync = Sync(
            running, config, self.store, self.ingest, self.guard, self.admission,
            last_gossip=lambda: self.gossip.last_delivery, jobs=self.jobs,
        )  # fmt: skip
        self.gossip = Gossip(
            running, config, self.ingest, self.guard, self.sync.request, self.admission
        )
        self.peers = PeerExchange(running, config, self.gossip.topic, self.guard)
        self.trimmer = Trimmer(running, config, self.guard, self._protected_peers)
        running.host.set_stream_handler(SYNC_PROTOCOL, self.sync.handle)
        running.host.set_stream_handler(PEERS_PROTOCOL, self.peers.handle)
        running.host.set_stream_handler(JOBS_PROTOCOL, self._handle_jobs)

    # -- use -------------------------------------------------------------------------------

    async def publish(self, event: SignedEvent) -> AppendResult:
        """Store our own (or an imported) event durably, then gossip it (a network-wide event)
        or push it to its counterparty (a job chain's)."""
        (result,) = await self.publish_many([event])
        return result

    async def publish_many(self, events: list[SignedEvent]) -> list[AppendResult]:
        """`publish` for several events, with one durable append."""
        for event in events:
            self.jobs.learn(event)
            if self.admission is not None:
                self.admission.own(event)
        results = await self.ingest.submit(events, "self")
        for event, result in zip(events, results, strict=True):
            if result.outcome is not Outcome.APPENDED:
                continue
            if self.jobs.is_job_event(event):
                self._push(event)
            else:
                await self.gossip.publish(event.raw)
        return results

    # -- job chains ------------------------------------------------------------------------

    def note_job_peer(self, principal: bytes, peer: ID) -> None:
        """The peer that speaks for `principal` (a counterparty): our job chain's new events
        towards it are pushed there."""
        self.jobs.note_peer(principal, peer)

    async def receive_job_events(
        self, events: list[SignedEvent], peer: ID
    ) -> list[AppendResult | None]:
        """Store verified job chain events a counterparty sent us (with its job request, its
        result, or a push), fetching from `peer` any of the chains' earlier events we lack.
        Only chains towards (or of) our own principals are taken; one result per event, None
        for an event refused."""
        jobs = self.jobs
        for event in events:
            jobs.learn(event)
        unknown = sorted({e.author for e in events if e.author not in jobs.bindings})
        if unknown:  # chains new to us: their bindings (and earlier events) come from the peer
            await self.fetch_job_chains(peer, unknown)
        taken = [e for e in events if jobs.accepts(e)]
        if len(taken) < len(events):
            self.guard.penalize(peer, 0.2, "job events not meant for this node")
        for event in taken:
            principal = jobs.principal_of(event.author)
            if principal is not None and principal not in jobs.own:
                jobs.note_peer(principal, peer)
        results = await self.ingest.submit(taken, peer.to_base58())
        gapped = sorted({e.author for e, r in zip(taken, results, strict=True)
                         if r.outcome is Outcome.GAP})  # fmt: skip
        if gapped:
            await self.fetch_job_chains(peer, gapped)
        by_id = {e.id: r for e, r in zip(taken, results, strict=True)}
        return [by_id.get(e.id) for e in events]

    async def fetch_job_chains(self, peer: ID, addresses: list[bytes]) -> int:
        """Fetch from `peer` the events of `addresses` and of every job chain it holds that
        speaks for or towards one of them (a counterparty filling a gap; an auditor fetching a
        party's log); the number received. Bounded by the sync session's time limit."""
        try:
            with trio.fail_after(self.config.frame_timeout_s * 10):
                return await self.sync.sync_from(peer, addresses)
        except (P2PError, trio.TooSlowError, Exception) as exc:  # the peer went away, mostly
            log.info("fetching job chains from %s failed: %r", peer.to_base58(), exc)
            return 0

    def _push(self, event: SignedEvent) -> None:
        counterparty = self.jobs.counterparty_of(event.author)
        peer = self.jobs.peers.get(counterparty) if counterparty is not None else None
        if peer is None:
            self.push_dropped += 1  # the counterparty fetches it when it next needs it
            return
        try:
            self._push_send.send_nowait((peer, event.raw))
        except trio.WouldBlock:
            self.push_dropped += 1

    async def _push_jobs(self) -> None:
        """Send queued job chain events, one stream per peer for all that are waiting."""
        limit = self.config.sync_batch_events
        async for peer, raw in self._push_receive:
            waiting: dict[ID, list[bytes]] = {peer: [raw]}
            while sum(len(r) for r in waiting.values()) < limit:
                try:
                    more_peer, more = self._push_receive.receive_nowait()
                except trio.WouldBlock:
                    break
                waiting.setdefault(more_peer, []).append(more)
            for to, raws in waiting.items():
                await self._push_to(to, raws)

    async def _push_to(self, peer: ID, raws: list[bytes]) -> None:
        try:
            with trio.fail_after(self.config.frame_timeout_s):
                stream = await self.running.host.new_stream(peer, [JOBS_PROTOCOL])
                try:
                    ms = MessageStream(
                        stream, self.config.max_frame_bytes, self.config.frame_timeout_s
                    )
                    await ms.send([JOBS_PUSH, raws])
                finally:
                    await stream.close()
            self.pushed += len(raws)
        except Exception as exc:  # gone, or it does not take pushes: it fetches them instead
            self.push_dropped += len(raws)
            log.info("pushing %d job events to %s failed: %r", len(raws), peer.to_base58(), exc)

    async def _handle_jobs(self, stream: INetStream) -> None:
        if await self.guard.refused(stream):
            return
        peer = stream.muxed_conn.peer_id
        ms = MessageStream(stream, self.config.max_frame_bytes, self.config.frame_timeout_s)
        try:
            _, raws = await ms.expect(JOBS_PUSH, 2)
            events = await trio.to_thread.run_sync(
                verify_batch, raws, self.config.sync_batch_events
            )
            await self.receive_job_events(events, peer)
        except (StreamClosed, StreamTimeout) as exc:
            log.info("job events from %s ended early: %s", peer.to_base58(), exc)
        except P2PError as exc:  # malformed, or a bad signature: junk from that peer
            self.guard.reject(peer, "job events", str(exc))
        finally:
            with contextlib.suppress(Exception):  # closing a stream the peer reset is fine
                await stream.close()

    async def connect(self, addr: str) -> str:
        """Dial a peer multiaddr; returns its peer id."""
        info = parse_peer_addr(addr)
        host = self.running.host
        with trio.fail_after(self.config.dial_timeout_s):
            if host.get_network().get_connections(info.peer_id) and not self.has_open_connection(
                info.peer_id
            ):
                # only closed ones are listed: host.connect would return at once, dial_peer
                # leaves them out and makes a new connection
                host.get_peerstore().add_addrs(info.peer_id, info.addrs, 120)
                await host.get_network().dial_peer(info.peer_id)
            else:
                await host.connect(info)
        return info.peer_id.to_base58()

    def event_count(self) -> int:
        """Stored events (every chain is contiguous from seq 1), without touching SQLite."""
        return sum(self.ingest.heads.values())

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds, re-checking after each store change (bound it with
        `trio.fail_after`)."""
        while not predicate():
            await self.ingest.wait_changed()

    def connected_peers(self) -> list[str]:
        return [p.to_base58() for p in self.running.host.get_connected_peers()]

    def has_open_connection(self, peer: ID) -> bool:
        """Whether a connection to `peer` is open. py-libp2p lists a peer as connected while its
        only connection is closed but not yet removed, and then refuses new streams to it ("No
        valid connections available") instead of dialling: such a peer must be dialled again."""
        conns = self.running.host.get_network().get_connections(peer)
        return any(not conn.is_closed for conn in conns)

    # -- background ------------------------------------------------------------------------

    async def _watch_peers(self, events: trio.MemoryReceiveChannel[tuple[str, ID]]) -> None:
        async for what, peer in events:
            name = peer.to_base58()
            if what == CONNECTED:
                if self.guard.is_banned(peer):
                    log.info("refusing banned peer %s", name)
                    await self.running.host.disconnect(peer)
                    continue
                log.info("peer connected: %s (%d peers)", name, len(self.connected_peers()))
                self.sync.request(peer)
            else:
                log.info("peer disconnected: %s", name)

    async def _reach_bootstrap(self) -> None:
        """Return once one bootstrap peer is connected; P2PError naming each one's failure
        when none answers in BOOTSTRAP_TRIES rounds (each dial bounded by dial_timeout_s)."""
        errors: dict[str, str] = {}
        for attempt in range(BOOTSTRAP_TRIES):
            if attempt:
                await trio.sleep(self.config.bootstrap_retry_s)
            for addr in self.config.bootstrap:
                self._unblock(parse_peer_addr(addr).peer_id)
                try:
                    await self.connect(addr)
                    return
                except Exception:  # refused, unreachable, wrong peer id: say which
                    errors[addr] = await trio.to_thread.run_sync(
                        dial_problem, addr, self.config.dial_timeout_s
                    )
        tried = "; ".join(f"{a}: {e}" for a, e in errors.items())
        raise P2PError(f"cannot reach any bootstrap peer ({BOOTSTRAP_TRIES} tries): {tried}")

    async def _bootstrap(self) -> None:
        """Dial the bootstrap peers now, and again when they are gone: every
        `bootstrap_retry_s` while this node needs them (no peer connected, or with peer exchange
        on a gossip mesh short of its target), else once per `bootstrap_idle_redial_s` after it
        was last seen connected. A leaf that meshes elsewhere comes back to a busy seed that
        trimmed it only that rarely, and a seed that restarted still gets its old peers back."""
        infos = [parse_peer_addr(a) for a in self.config.bootstrap]
        failures: dict[str, int] = {}
        dialled: dict[str, float] = {}  # when each was last dialled
        target = self.config.peers_target
        while infos:
            connected = set(self.running.host.get_connected_peers())
            mesh = self.running.router.mesh.get(self.gossip.topic, ())
            needed = not connected or target <= 0 or len(mesh) < target
            now = trio.current_time()
            for info in infos:
                name = info.peer_id.to_base58()
                if info.peer_id in connected:
                    dialled[name] = now  # connected (by whoever dialled): the idle wait starts
                    continue
                if self.guard.is_banned(info.peer_id):
                    continue
                idle = self.config.bootstrap_idle_redial_s
                if not needed and now - dialled.get(name, now) < idle:
                    continue
                dialled[name] = now
                self._unblock(info.peer_id)
                try:
                    with trio.fail_after(self.config.dial_timeout_s):
                        await self.running.host.connect(info)
                    failures.pop(name, None)
                except Exception as exc:  # unreachable, refused, timed out: retry later
                    failures[name] = failures.get(name, 0) + 1
                    if failures[name] in (1, 10, 100):
                        log.warning("cannot reach bootstrap peer %s (%d tries): %r",
                                    name, failures[name], exc)  # fmt: skip
            await trio.sleep(self.config.bootstrap_retry_s)

    def _protected_peers(self) -> set[ID]:
        """Peers the trimmer leaves connected: our bootstrap peers and the job counterparties
        heard from in the last `trim_job_peer_s`."""
        peers = {parse_peer_addr(a).peer_id for a in self.config.bootstrap}
        return peers | self.jobs.recent_peers(self.config.trim_job_peer_s)

    def _unblock(self, peer: ID) -> None:
        """py-libp2p refuses for 60 s to redial a peer whose addresses all failed once (its
        "negative cache"); a restarted bootstrap peer must be found sooner."""
        unblock = getattr(self.running.host.get_network(), "unblock_peer", None)
        if unblock is not None:
            unblock(peer)

    async def _report(self) -> None:
        """Log what admission held back (once per period), and record it and the peer figures
        for `castnet node info` whenever they change."""
        shown: dict[str, object] = {}
        failed = False
        every = self.admission.config.report_every_s if self.admission is not None else 2.0
        while True:
            await trio.sleep(min(every, 2.0))
            if self.admission is not None:
                self.admission.report(trio.current_time())
            figures = self._figures()
            if figures == shown:
                continue
            shown = figures  # a small file, written only when the figures changed
            try:
                await trio.to_thread.run_sync(_write_json, self.data_dir / INFO_FILE, self._info())
            except OSError as exc:  # a full or read-only disk: the node goes on without it
                if not failed:
                    log.warning("cannot record the node's figures for `castnet node info` in "
                                "%s: %s (said once)", self.data_dir / INFO_FILE, exc)  # fmt: skip
                failed = True

    def _figures(self) -> dict[str, object]:
        """What `castnet node info` shows of the running node: peers, and admission."""
        mesh = self.running.router.mesh.get(self.gossip.topic, ())
        figures: dict[str, object] = {
            "peers": {
                "connected": len(self.running.host.get_connected_peers()),
                "mesh": len(mesh),
                "target": self.config.peers_target,
                "max": self.config.max_peers,
                "exchange_dialed": self.peers.dialed,
                "exchange_connected": self.peers.connected,
                "trimmed": self.trimmer.trimmed,
                "refused_per_ip": getattr(self.running.host.get_network(), "castnet_ip_refused", 0),
            }
        }
        if self.admission is not None:
            figures["admission"] = self.admission.summary()
        return figures

    def _info(self) -> dict[str, object]:
        """Where this node listens, its peer figures and what admission held back, for
        `castnet node info` and scripts."""
        return {
            "peer_id": self.peer_id,
            "network": self.config.network,
            "addrs": self.addrs,
            "pid": os.getpid(),
            **self._figures(),
        }

    def _write_info(self) -> None:
        _write_json(self.data_dir / INFO_FILE, self._info())


def _write_json(path: Path, info: dict[str, object]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, path)


@asynccontextmanager
async def open_node(
    data_dir: str | Path, config: P2PConfig, store: EventStore | None = None
) -> AsyncIterator[P2PNode]:
    """A started node for the duration of the block; stopped (cancelled) when it exits."""
    async with trio.open_nursery() as nursery:
        node = P2PNode(data_dir, config, store)
        await nursery.start(node.run)
        try:
            yield node
        finally:
            nursery.cancel_scope.cancel()
