"""A castnet p2p node as one trio service: the event store's writer, the libp2p host, gossip,
sync, bootstrap redialing and peer bookkeeping, started in order and closed in reverse."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from libp2p.peer.id import ID

from events.envelope import SignedEvent
from p2p.addrs import dial_problem
from p2p.admission import Admission
from p2p.config import P2PConfig
from p2p.errors import P2PError
from p2p.gossip import Gossip, events_topic, install_drop_counter
from p2p.guard import PeerGuard
from p2p.holding import Holding
from p2p.host import RunningHost, running_host
from p2p.identity import load_or_create_identity, peer_id_of
from p2p.ingest import Ingest
from p2p.peers import CONNECTED, PeerEvents, parse_peer_addr
from p2p.scoring import PeerScores
from p2p.sync import SYNC_PROTOCOL, Sync
from storage.service import StoreService
from storage.store import AppendResult, EventStore, Outcome

log = logging.getLogger("castnet.p2p.node")
INFO_FILE = "p2p-info.json"
BOOTSTRAP_TRIES = 3  # rounds of dials before a node that requires a bootstrap peer gives up


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
        self.addrs: list[str] = []
        self.running: RunningHost
        self.ingest: Ingest
        self.guard: PeerGuard
        self.gossip: Gossip
        self.sync: Sync
        self.admission = Admission() if config.admission else None
        for addr in config.bootstrap:
            parse_peer_addr(addr)  # refuse a bad --bootstrap before anything starts

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        install_drop_counter()
        service = StoreService(self.store)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(service.run)
                if self.admission is not None:
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
                        await inner.start(self.sync.run)
                        await inner.start(self.gossip.run)
                        inner.start_soon(self._watch_peers, peer_receive)
                        if self.config.require_bootstrap and self.config.bootstrap:
                            await self._reach_bootstrap()
                        inner.start_soon(self._bootstrap)
                        self._write_info()
                        if self.admission is not None:
                            inner.start_soon(self._report_admission)
                        log.info("p2p node %s on network %r", self.peer_id, self.config.network)
                        for addr in self.addrs:
                            log.info("listening on %s", addr)
                        task_status.started(self)
                        await trio.sleep_forever()
        finally:
            service.close()
            if self._own_store:
                self.store.close()

    def _before_listen(self, running: RunningHost) -> None:
        """Wire the protocol handlers before the host accepts its first connection."""
        self.running = running
        config = self.config
        scores = PeerScores(config.ban_threshold, config.score_half_life_s, config.ban_s)
        self.guard = PeerGuard(running, scores)
        self.sync = Sync(
            running, config, self.store, self.ingest, self.guard, self.admission,
            last_gossip=lambda: self.gossip.last_delivery,
        )  # fmt: skip
        self.gossip = Gossip(
            running, config, self.ingest, self.guard, self.sync.request, self.admission
        )
        running.host.set_stream_handler(SYNC_PROTOCOL, self.sync.handle)

    # -- use -------------------------------------------------------------------------------

    async def publish(self, event: SignedEvent) -> AppendResult:
        """Store our own (or an imported) event durably, then gossip it."""
        if self.admission is not None:
            self.admission.own(event)
        (result,) = await self.ingest.submit([event], "self")
        if result.outcome is Outcome.APPENDED:
            await self.gossip.publish(event.raw)
        return result

    async def connect(self, addr: str) -> str:
        """Dial a peer multiaddr; returns its peer id."""
        info = parse_peer_addr(addr)
        with trio.fail_after(self.config.dial_timeout_s):
            await self.running.host.connect(info)
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
        """Keep the bootstrap peers connected: dial now, and again whenever they are gone."""
        infos = [parse_peer_addr(a) for a in self.config.bootstrap]
        failures: dict[str, int] = {}
        while infos:
            connected = set(self.running.host.get_connected_peers())
            for info in infos:
                name = info.peer_id.to_base58()
                if info.peer_id in connected or self.guard.is_banned(info.peer_id):
                    continue
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

    def _unblock(self, peer: ID) -> None:
        """py-libp2p refuses for 60 s to redial a peer whose addresses all failed once (its
        "negative cache"); a restarted bootstrap peer must be found sooner."""
        unblock = getattr(self.running.host.get_network(), "unblock_peer", None)
        if unblock is not None:
            unblock(peer)

    async def _report_admission(self) -> None:
        """Log what admission held back (once per period) and record the counts for `castnet
        node info`."""
        assert self.admission is not None
        every = self.admission.config.report_every_s
        shown: dict[str, object] = {}
        while True:
            await trio.sleep(min(every, 2.0))
            self.admission.report(trio.current_time())
            summary = self.admission.summary()
            if summary != shown:
                shown = summary
                self._write_info()  # a small file; only when the counts changed

    def _write_info(self) -> None:
        """Record where this node listens (and what admission held back), for `castnet node
        info` and scripts."""
        info: dict[str, object] = {
            "peer_id": self.peer_id,
            "network": self.config.network,
            "addrs": self.addrs,
            "pid": os.getpid(),
        }
        if self.admission is not None:
            info["admission"] = self.admission.summary()
        path = self.data_dir / INFO_FILE
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
