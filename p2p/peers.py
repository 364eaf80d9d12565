"""Connection events from the libp2p swarm as a trio channel, and redialing bootstrap peers."""

from __future__ import annotations

import logging

import multiaddr
import trio
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr

from p2p.errors import P2PError

log = logging.getLogger("castnet.p2p.peers")
CONNECTED, DISCONNECTED = "connected", "disconnected"


class PeerEvents(INotifee):
    """Forwards (CONNECTED|DISCONNECTED, peer id) without blocking the swarm; when the reader lags
    an event is skipped (logged), and periodic sync still reaches that peer."""

    def __init__(self, send: trio.MemorySendChannel[tuple[str, ID]]) -> None:
        self.send = send

    def _put(self, what: str, conn: INetConn) -> None:
        try:
            self.send.send_nowait((what, conn.muxed_conn.peer_id))
        except trio.WouldBlock:
            log.info("peer event backlog full: skipped a %s event", what)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._put(CONNECTED, conn)
        await trio.lowlevel.checkpoint()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._put(DISCONNECTED, conn)
        await trio.lowlevel.checkpoint()

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        await trio.lowlevel.checkpoint()


def parse_peer_addr(text: str) -> PeerInfo:
    """A full multiaddr with `/p2p/<peer id>`, as `castnet node start` logs it."""
    try:
        return info_from_p2p_addr(multiaddr.Multiaddr(text))
    except Exception as exc:  # multiaddr and peer-id parsing raise a variety of errors
        raise P2PError(f"not a peer multiaddr (/ip4/../tcp/../p2p/ID): {text!r}: {exc}") from None
