"""What a node does to its libp2p connections beyond py-libp2p's own calls: find the TCP socket
under a connection, and abort every connection at once (p2p.node bounds a stuck close with it)."""

from __future__ import annotations

import trio
from libp2p.abc import IHost


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
