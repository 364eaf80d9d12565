"""What a node does to its libp2p connections beyond py-libp2p's own calls: find the TCP socket
under a connection, abort every connection at once (p2p.node bounds a stuck close with it), and
limit the streams one peer may have open to this node."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.network.connection.swarm_connection import SwarmConn

log = logging.getLogger("castnet.p2p.connections")
# streams one peer may have open to this node at once: a node's own protocols use a handful per
# peer (gossip, sync, a job's requests); each stream may hold its receive window (256 KiB and
# more) in memory, and py-libp2p limits streams only across all peers together
MAX_INBOUND_STREAMS = 128


def _socket_of(conn: object) -> trio.SocketStream | None:
    """The TCP stream under a swarm connection (through yamux, the secure session and the raw
    connection), or None for a transport without one."""
    layer: object | None = conn
    for _ in range(8):
        if isinstance(layer, trio.SocketStream):
            return layer
        names = ("muxed_conn", "secured_conn", "conn", "stream")
        layer = next((getattr(layer, n) for n in names if hasattr(layer, n)), None)
    return None


def abort_connections(host: IHost) -> int:
    """Close the TCP socket of every connection of `host` at once, without a goodbye: a task
    blocked writing to a peer that does not read (py-libp2p resets a failed stream in a shielded
    scope) gets an error instead of waiting for good. How many sockets were closed."""
    closed = 0
    for conns in list(host.get_network().connections.values()):
        for conn in conns if isinstance(conns, list) else [conns]:
            stream = _socket_of(conn)
            if stream is not None and stream.socket.fileno() != -1:
                stream.socket.close()  # wakes the tasks waiting on it (trio notify_closing)
                closed += 1
    return closed


_accept = SwarmConn._handle_muxed_stream


async def _accept_limited(self: SwarmConn, muxed_stream: Any) -> None:
    """py-libp2p's handling of a stream the peer opened, refused (reset) while the peer already
    has `MAX_INBOUND_STREAMS` open; the first refusal on a connection is logged."""
    running = getattr(self, "castnet_inbound", 0)
    if running >= MAX_INBOUND_STREAMS:
        if not getattr(self, "castnet_refused", False):
            self.castnet_refused = True  # type: ignore[attr-defined]
            log.warning("peer %s has %d streams open to this node: refusing more",
                        self.muxed_conn.peer_id, running)  # fmt: skip
        with contextlib.suppress(Exception):  # a stream that is already gone
            await muxed_stream.reset()
        return
    self.castnet_inbound = running + 1  # type: ignore[attr-defined]
    try:
        await _accept(self, muxed_stream)
    finally:
        self.castnet_inbound -= 1  # type: ignore[attr-defined]


def limit_inbound_streams() -> None:
    """Install the per-peer limit on streams in py-libp2p's connections (idempotent)."""
    SwarmConn._handle_muxed_stream = _accept_limited  # type: ignore[method-assign]
