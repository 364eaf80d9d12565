"""Connection trimming: a node that many peers dial (a seed, a well-known orchestrator) keeps
at most `max_peers` connections.

py-libp2p keeps every connection until its inbound cap (300) and then refuses newcomers, and
its own pruner never closes a connection that has a stream open (every castnet peer has its
gossip streams open). A seed that everyone bootstraps to would fill up with leaves that found
their meshes elsewhere long ago, and turn away the next node that needs it. Every
`trim_every_s` (5 s), while more than `max_peers` peers are connected, this closes connections down
to the low-water mark (three quarters of `max_peers`), choosing only among peers that:

- are not in the gossip mesh of any topic (the mesh carries our messages),
- are not one of our bootstrap peers, nor the counterparty of a job chain we take part in,
- have no stream open besides gossip and peer exchange (a sync, a job's request, a worker's
  registration: work in progress is never cut),
- have been connected for at least `trim_grace_s` (a newcomer gets time to ask for peers and
  to graft).

The most penalised go first, the rest in random order. A trimmed peer that still needs peers
finds them by peer exchange (p2p.discovery); a node redials its bootstrap peers only while its
mesh is short (p2p.node), so trimming a leaf that meshes elsewhere does not bring it back.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterable

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.floodsub import PROTOCOL_ID as FLOODSUB_PROTOCOL_ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11

from p2p.config import P2PConfig
from p2p.connections import socket_of
from p2p.discovery import PEERS_PROTOCOL
from p2p.guard import PeerGuard
from p2p.host import RunningHost

log = logging.getLogger("castnet.p2p.trim")
LOG_EVERY_S = 60.0  # trims are logged in aggregate, at most this often
# streams that every connected castnet peer holds (or opens now and then) and that are not work
# in progress; None: a stream still negotiating its protocol (py-libp2p bounds that to 10 s)
_IDLE_PROTOCOLS = frozenset(
    {PROTOCOL_ID, PROTOCOL_ID_V11, FLOODSUB_PROTOCOL_ID, PEERS_PROTOCOL, None}
)


def low_water(max_peers: int) -> int:
    """How many connections a trim leaves: three quarters of `max_peers`, at least one."""
    return max(1, max_peers - max_peers // 4)


class Trimmer:
    """The loop that keeps this node at `config.max_peers` connections or fewer."""

    def __init__(
        self,
        running: RunningHost,
        config: P2PConfig,
        guard: PeerGuard,
        protected: Callable[[], Iterable[ID]],
    ) -> None:
        self.running = running
        self.config = config
        self.guard = guard
        self.protected = protected  # bootstrap peers, job counterparties (asked at each pass)
        self.trimmed = 0  # connections closed by trimming, since the start
        self.aborted = 0  # ... of which the close did not finish in time: their sockets closed
        self._logged_at = -math.inf
        self._trimming = False

    async def run(self) -> None:
        while True:
            await trio.sleep(self.config.trim_every_s)
            try:
                await self.trim()
            except Exception:  # never the end of the node: logged, tried again next pass
                log.exception("trimming connections failed")

    def choose(self) -> list[ID]:
        """The peers to disconnect now (none while at or under `max_peers`)."""
        connections = self.running.host.get_network().connections
        if self.config.max_peers <= 0 or len(connections) <= self.config.max_peers:
            return []
        router = self.running.router
        keep: set[ID] = set(self.protected())
        for mesh in router.mesh.values():
            keep |= mesh
        now = time.time()  # py-libp2p stamps connections with wall-clock time
        candidates = []
        for peer, conns in list(connections.items()):
            if peer in keep:
                continue
            conns = conns if isinstance(conns, list) else [conns]
            if any(now - getattr(c, "_created_at", now) < self.config.trim_grace_s for c in conns):
                continue
            if any(s.get_protocol() not in _IDLE_PROTOCOLS for c in conns for s in c.get_streams()):
                continue  # work in progress (a sync, a job, a worker's registration)
            candidates.append(peer)
        excess = len(connections) - low_water(self.config.max_peers)
        scores = self.guard.scores
        at = trio.current_time()
        random.shuffle(candidates)
        candidates.sort(key=lambda p: -scores.points(p.to_base58(), at))  # stable: ties random
        return candidates[:excess]

    async def trim(self) -> int:
        """Disconnect the peers `choose` names; how many were (0 while another pass runs)."""
        if self._trimming:
            return 0
        self._trimming = True
        try:
            return await self._trim()
        finally:
            self._trimming = False

    async def _trim(self) -> int:
        chosen = self.choose()
        if not chosen:
            return 0
        network = self.running.host.get_network()
        before = len(network.connections)

        async def drop(peer: ID) -> None:
            # py-libp2p marks the connection closed before it writes its goodbye; a peer that
            # does not read holds that write, and a close cancelled there left the connection
            # open but no longer listed: its sockets are closed instead
            conns = network.connections.get(peer, [])
            sockets = [socket_of(c) for c in (conns if isinstance(conns, list) else [conns])]
            with trio.move_on_after(self.config.dial_timeout_s) as scope:
                try:
                    await self.running.host.disconnect(peer)
                except Exception as exc:  # already gone
                    log.debug("disconnecting %s: %r", peer.to_base58(), exc)
            if scope.cancelled_caught:
                self.aborted += 1
                for socket in sockets:
                    if socket is not None and socket.socket.fileno() != -1:
                        socket.socket.close()  # wakes whatever waits on it

        async with trio.open_nursery() as nursery:
            for peer in chosen:
                nursery.start_soon(drop, peer)
        self.trimmed += len(chosen)
        now = trio.current_time()
        if now - self._logged_at >= LOG_EVERY_S:
            log.info("%d connections, over the limit of %d: closed %d that were outside the "
                     "gossip mesh and idle (%d trimmed since the start, %d of them aborted)",
                     before, self.config.max_peers, len(chosen), self.trimmed,
                     self.aborted)  # fmt: skip
            self._logged_at = now
        return len(chosen)
