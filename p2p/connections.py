"""What a node does to its libp2p connections beyond py-libp2p's own calls: find the TCP socket
under a connection, abort every connection at once (p2p.node bounds a stuck close with it),
limit the streams one peer may have open to this node, and give back an inbound connection's
slot when the connection ends."""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.network.connection.swarm_connection import SwarmConn
from libp2p.network.swarm import Swarm

log = logging.getLogger("castnet.p2p.connections")
# streams one peer may have open to this node at once: a node's own protocols use a handful per
# peer (gossip, sync, a job's requests); each stream may hold its receive window (256 KiB and
# more) in memory, and py-libp2p limits streams only across all peers together
MAX_INBOUND_STREAMS = 128
_REFUSAL_LOG_S = 60.0  # a refused address is logged at most this often
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _not_loopback(ip: IPAddress) -> bool:
    return not ip.is_loopback


def socket_of(conn: object) -> trio.SocketStream | None:
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
            stream = socket_of(conn)
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


_inbound = Swarm._do_handle_inbound_connection


async def _inbound_while_open(self: Swarm, read_write_closer: Any, *args: Any) -> None:
    """py-libp2p's handling of an inbound connection, ended once that connection has closed.

    py-libp2p 0.8.1 keeps each inbound connection's handler (and the inbound slot it holds, one
    of 300) until the whole swarm stops, whether the connection lives or not: a node that had
    accepted 300 connections over its life refused every inbound connection after that, and a
    seed whose peers come and go (or that trims them) got there in hours. Here the handler ends
    when its connection closes, which gives its slot back.

    And one IP address may hold at most `castnet_per_ip` inbound connections at once (loopback
    is not limited): one host opening connections under ever new peer ids would otherwise fill
    those places, each kept for the trimmer's grace period, and keep newcomers out."""
    socket = socket_of(read_write_closer)
    ip = _peer_ip(socket)
    held: Counter[IPAddress] = self.__dict__.setdefault("castnet_inbound_ips", Counter())
    if ip is not None and _refused(self, ip, held[ip]):
        with contextlib.suppress(Exception):
            await read_write_closer.close()
        return
    if ip is not None:
        held[ip] += 1
    try:
        await _handle_while_open(self, read_write_closer, socket, *args)
    finally:
        if ip is not None:
            held[ip] -= 1
            if held[ip] <= 0:
                del held[ip]


def _refused(swarm: Swarm, ip: IPAddress, holding: int) -> bool:
    """Whether an inbound connection from `ip`, which holds `holding` already, is over the
    swarm's limit per address (logged at most once per `_REFUSAL_LOG_S` per address)."""
    limit = getattr(swarm, "castnet_per_ip", 0)
    limited: Callable[[IPAddress], bool] = getattr(swarm, "castnet_ip_limited", _not_loopback)
    if limit <= 0 or holding < limit or not limited(ip):
        return False
    swarm.castnet_ip_refused = getattr(swarm, "castnet_ip_refused", 0) + 1  # type: ignore[attr-defined]
    logged: dict[IPAddress, float] = swarm.__dict__.setdefault("castnet_ip_logged", {})
    now = trio.current_time()
    if now - logged.get(ip, -_REFUSAL_LOG_S) >= _REFUSAL_LOG_S:
        if len(logged) > 4096:
            logged.clear()
        logged[ip] = now
        log.warning("refusing inbound connections from %s: it holds %d, the limit per address "
                    "(%d refused in all)", ip, holding, swarm.castnet_ip_refused)  # fmt: skip
    return True


def _peer_ip(socket: trio.SocketStream | None) -> IPAddress | None:
    if socket is None:
        return None
    try:
        return ip_key(ipaddress.ip_address(socket.socket.getpeername()[0]))
    except (OSError, ValueError, IndexError, TypeError):  # closed already, or not IP
        return None


def ip_key(ip: IPAddress) -> IPAddress:
    """A remote address as the limit per address counts it: an IPv4 address mapped into IPv6 as
    itself, and an IPv6 address as its /64 (one host's share of addresses), named by the /64's
    first address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if not ip.is_loopback:
            return ipaddress.IPv6Network((ip, 64), strict=False).network_address
    return ip


def limit_inbound_per_ip(swarm: Any, limit: int) -> None:
    """At most `limit` inbound connections at once from one (non-loopback) IP address; 0: no
    limit."""
    swarm.castnet_per_ip = limit


class _Upgraded:
    """Where an inbound handler learns the connection its upgrade made."""

    def __init__(self) -> None:
        self.muxed: Any = None
        self.done = trio.Event()


_UPGRADED: contextvars.ContextVar[_Upgraded | None] = contextvars.ContextVar(
    "castnet_upgraded", default=None
)
_upgrade = Swarm.upgrade_inbound_raw_conn


async def _upgrade_noted(self: Swarm, *args: Any, **kwargs: Any) -> Any:
    """py-libp2p's upgrade of an inbound connection, telling the handler what it made."""
    muxed = await _upgrade(self, *args, **kwargs)
    holder = _UPGRADED.get()
    if holder is not None and not holder.done.is_set():
        holder.muxed = muxed
        holder.done.set()
    return muxed


async def _handle_while_open(
    self: Swarm, read_write_closer: Any, socket: trio.SocketStream | None, *args: Any
) -> None:
    holder = _Upgraded()
    async with trio.open_nursery() as nursery:

        async def handle() -> None:
            try:
                await _inbound(self, read_write_closer, *args)
            finally:  # refused, failed, or (rarely) the swarm stopped
                nursery.cancel_scope.cancel()

        token = _UPGRADED.set(holder)  # the handler's task starts with it in its context
        try:
            nursery.start_soon(handle)
        finally:
            _UPGRADED.reset(token)
        if socket is None:
            return  # another transport: py-libp2p's handling as it is
        await holder.done.wait()  # the upgrade ends, by py-libp2p's timeouts if need be
        closed = getattr(holder.muxed, "event_closed", None)
        if isinstance(closed, trio.Event):
            await closed.wait()
        else:
            while not getattr(holder.muxed, "is_closed", True):
                await trio.sleep(1.0)
        nursery.cancel_scope.cancel()


def release_inbound_slots() -> None:
    """End each inbound connection's handler with its connection (idempotent)."""
    Swarm._do_handle_inbound_connection = _inbound_while_open  # type: ignore[method-assign]
    Swarm.upgrade_inbound_raw_conn = _upgrade_noted  # type: ignore[method-assign]
