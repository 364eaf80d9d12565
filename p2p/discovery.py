"""Peer exchange: a node that was given a few bootstrap peers finds the rest of the network.

Gossipsub keeps a mesh of D_lo..D_hi peers per topic, but only among the peers a node is
connected to, and py-libp2p finds none by itself: a node that dialled three bootstrap peers
stayed at a mesh of three (under D_lo), and the seeds everyone dials became the only hubs (their
mesh prunes the surplus, and a pruned peer had nowhere else to go). While a node's mesh is short
of `peers_target` (default D_lo) and no connected peer is left to graft, it asks one connected
peer at a time (`/castnet/peers/1`) for peers it knows, and dials as many as it is short.

The answer lists connected peers subscribed to the network's topic (castnet nodes, and any
libp2p peer that gossips on it) with the addresses they announced in their signed peer
records or were dialled at. What a peer answers is never trusted further than one dial each:
an address is dialled only if it is TCP on a unicast IP in the same scope as the answering
peer (loopback only when the answer came over loopback, private ranges only from a peer on a
private or loopback address), the dial must reach the named peer id (Noise proves it), a
peer that failed, and each address it was dialled at (under any peer id the same peer names),
is not dialled again for `FAILED_BACKOFF_S`, and a malformed answer costs the peer a penalty.
A peer that does not serve the protocol (a js-libp2p peer, a worker) is asked once.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import random
import time
from typing import Any

import multiaddr
import trio
from libp2p.custom_types import TProtocol
from libp2p.network.stream.net_stream import INetStream
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2p.config import P2PConfig
from p2p.errors import P2PError, StreamClosed, StreamTimeout
from p2p.framing import MessageStream
from p2p.guard import PeerGuard
from p2p.host import RunningHost
from p2p.sync import not_supported

log = logging.getLogger("castnet.p2p.discovery")
PEERS_PROTOCOL = TProtocol("/castnet/peers/1")
PEERS_ANSWER = 1  # `[1, [[peer id (base58), [multiaddr, ...]], ...]]`
ANSWER_PEERS = 16  # peers in one answer, at most
ADDRS_PER_PEER = 4
MAX_ADDR_CHARS = 200
MAX_ANSWER_BYTES = 16 * 1024
FAILED_BACKOFF_S = 300.0  # a peer whose dial failed is not dialled again for this long
FIRST_ROUND_S = 1.0  # after the start: bootstrap dials go first
_REMEMBERED = 4096  # peers known not to serve the protocol
_IPS = ("ip4", "ip6")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PeerExchange:
    """The protocol's handler and the loop that keeps a node's gossip mesh at
    `config.peers_target` peers or more."""

    def __init__(
        self, running: RunningHost, config: P2PConfig, topic: str, guard: PeerGuard
    ) -> None:
        self.running = running
        self.config = config
        self.topic = topic
        self.guard = guard
        self.dialed = 0  # peers dialled because a peer named them
        self.connected = 0  # ... of which the dial succeeded
        # peers that do not serve the protocol (the latest _REMEMBERED, oldest first)
        self._no_exchange: dict[ID, None] = {}
        self._asked: dict[ID, float] = {}  # when each peer was last asked
        self._failed: dict[ID, float] = {}  # until when a peer is not dialled again
        # until when an address is not dialled again on the word of the peer that named it,
        # under any peer id: a peer that names someone else's address under ever new ids gets
        # it dialled once per FAILED_BACKOFF_S by each node that asks it, not once per id (no
        # amplifier of connection floods); keyed by the naming peer too, so that a liar cannot
        # keep an honest node's address from being dialled when an honest peer names it
        self._failed_addrs: dict[tuple[str, ID], float] = {}

    # -- answering -------------------------------------------------------------------------

    async def handle(self, stream: INetStream) -> None:
        if await self.guard.refused(stream):
            return
        asker = stream.muxed_conn.peer_id
        try:
            ms = MessageStream(stream, MAX_ANSWER_BYTES, self.config.frame_timeout_s)
            await ms.send([PEERS_ANSWER, self.known_peers(exclude=asker)])
        except (StreamClosed, StreamTimeout) as exc:
            log.debug("peer list to %s not sent: %s", asker.to_base58(), exc)
        finally:
            with contextlib.suppress(Exception):  # closing a stream the peer reset is fine
                await stream.close()

    def known_peers(self, exclude: ID) -> list[list[Any]]:
        """Up to ANSWER_PEERS connected peers on our topic (a random choice), with addresses."""
        host = self.running.host
        on_topic = self.running.pubsub.peer_topics.get(self.topic, set())
        peers = [p for p in host.get_connected_peers() if p in on_topic and p != exclude]
        random.shuffle(peers)
        store = host.get_peerstore()
        answer: list[list[Any]] = []
        for peer in peers:
            if self.guard.is_banned(peer):
                continue
            try:
                addrs = [_bare(a) for a in store.addrs(peer)]
            except Exception:  # py-libp2p raises when it has no addresses for the peer
                continue
            usable = [a for a in dict.fromkeys(addrs) if _ip_of(a) is not None][:ADDRS_PER_PEER]
            if usable:
                answer.append([peer.to_base58(), usable])
            if len(answer) >= ANSWER_PEERS:
                break
        return answer

    # -- asking ----------------------------------------------------------------------------

    async def run(self) -> None:
        await trio.sleep(FIRST_ROUND_S)
        while True:
            try:
                await self.round()
            except Exception:  # never the end of the node: logged, tried again next round
                log.exception("peer exchange round failed")
            await trio.sleep(self.config.peer_exchange_s)

    def topic_peers(self) -> set[ID]:
        on_topic = self.running.pubsub.peer_topics.get(self.topic, set())
        return {p for p in self.running.host.get_connected_peers() if p in on_topic}

    def shortfall(self, connected: set[ID]) -> int:
        """How many peers to add: the target less the gossip mesh and the connected peers
        gossipsub may still graft into it (not in its prune backoff). Seeds that everyone dials
        keep only a few peers in their mesh and prune the rest: counted as connections they
        would hold a node at its bootstrap peers with no mesh at all."""
        router = self.running.router
        mesh = router.mesh.get(self.topic, set())
        if len(mesh) >= self.config.peers_target:
            return 0
        backoff = router.back_off.get(self.topic, {})
        now = time.time()  # py-libp2p's backoff deadlines are wall-clock seconds
        graftable = sum(1 for p in connected if p not in mesh and backoff.get(p, 0) <= now)
        return self.config.peers_target - len(mesh) - graftable

    async def round(self) -> int:
        """Ask one peer and dial what it names, if the gossip mesh is short of the target; the
        number of new connections."""
        connected = self.topic_peers()
        want = self.shortfall(connected)
        candidates = [p for p in connected if p not in self._no_exchange]
        if want <= 0 or not candidates:
            return 0
        self._asked = {p: t for p, t in self._asked.items() if p in connected}
        asked = min(candidates, key=lambda p: (self._asked.get(p, -1.0), random.random()))
        self._asked[asked] = trio.current_time()
        named = await self.ask(asked)
        now = trio.current_time()
        me = self.running.host.get_id()
        linked = set(self.running.host.get_connected_peers())  # on the topic or not (yet)
        fresh = []
        for info in named:
            if (
                info.peer_id == me
                or info.peer_id in linked
                or self.guard.is_banned(info.peer_id)
                or self._failed.get(info.peer_id, -1.0) > now
            ):
                continue
            info.addrs = [
                a for a in info.addrs if self._failed_addrs.get((str(a), asked), -1.0) <= now
            ]
            if info.addrs:
                fresh.append(info)
        random.shuffle(fresh)
        chosen = fresh[:want]
        if not chosen:
            log.debug("peer exchange: %s named no peer to dial", asked.to_base58())
            return 0
        made = 0

        async def dial(info: PeerInfo) -> None:
            nonlocal made
            try:
                with trio.fail_after(self.config.dial_timeout_s):
                    await self.running.host.connect(info)
                made += 1
            except Exception as exc:  # unreachable, refused, another peer id: not again soon
                until = trio.current_time() + FAILED_BACKOFF_S
                self._failed[info.peer_id] = until
                for addr in info.addrs:
                    self._failed_addrs[(str(addr), asked)] = until
                log.debug("peer exchange: dialling %s failed: %r", info.peer_id.to_base58(), exc)

        async with trio.open_nursery() as nursery:
            for info in chosen:
                nursery.start_soon(dial, info)
        self.dialed += len(chosen)
        self.connected += made
        log.info("peer exchange: %s named %d peers; connected to %d of the %d dialled "
                 "(%d peers on the topic before; mesh target %d)", asked.to_base58(), len(named),
                 made, len(chosen), len(connected), self.config.peers_target)  # fmt: skip
        self._forget_old_failures(now)
        return made

    async def ask(self, peer: ID) -> list[PeerInfo]:
        """The peers `peer` names (those in a scope we may dial); [] when it cannot answer."""
        try:
            with trio.fail_after(self.config.dial_timeout_s):
                stream = await self.running.host.new_stream(peer, [PEERS_PROTOCOL])
        except Exception as exc:  # gone, or it does not speak the protocol
            if not_supported(exc):
                self._no_exchange[peer] = None
                if len(self._no_exchange) > _REMEMBERED:
                    del self._no_exchange[next(iter(self._no_exchange))]
                log.info("%s does not serve %s; not asking it for peers again",
                         peer.to_base58(), PEERS_PROTOCOL)  # fmt: skip
            else:
                log.debug("asking %s for peers failed: %r", peer.to_base58(), exc)
            return []
        try:
            via = _remote_ip(stream)
            ms = MessageStream(stream, MAX_ANSWER_BYTES, self.config.frame_timeout_s)
            _, answer = await ms.expect(PEERS_ANSWER, 2)
            return parse_answer(answer, via)
        except (StreamClosed, StreamTimeout) as exc:
            log.debug("peer list from %s ended early: %s", peer.to_base58(), exc)
        except P2PError as exc:  # malformed: junk from that peer
            self.guard.reject(peer, "peer list", str(exc))
        finally:
            with contextlib.suppress(Exception):
                await stream.close()
        return []

    def _forget_old_failures(self, now: float) -> None:
        for table in (self._failed, self._failed_addrs):
            for key in [k for k, until in table.items() if until <= now]:
                del table[key]

    def summary(self) -> dict[str, int]:
        return {"target": self.config.peers_target, "dialed": self.dialed,
                "connected": self.connected}  # fmt: skip


def parse_answer(answer: Any, via: IPAddress | None) -> list[PeerInfo]:
    """The peers of an answer whose addresses may be dialled from where it came (`via`: the
    answering peer's IP); P2PError for a malformed answer."""
    if not isinstance(answer, list) or len(answer) > ANSWER_PEERS:
        raise P2PError(f"a peer list is a list of at most {ANSWER_PEERS} entries")
    infos: list[PeerInfo] = []
    for entry in answer:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                and isinstance(entry[1], list) and len(entry[1]) <= ADDRS_PER_PEER):  # fmt: skip
            raise P2PError("a peer list entry is [peer id, [up to 4 multiaddrs]]")
        try:
            peer = ID.from_base58(entry[0])
        except Exception:  # base58 and multihash errors vary
            raise P2PError(f"bad peer id in a peer list: {entry[0][:80]!r}") from None
        addrs = []
        for text in entry[1]:
            if not isinstance(text, str) or len(text) > MAX_ADDR_CHARS:
                raise P2PError("a peer list address is a multiaddr string")
            try:
                addr = multiaddr.Multiaddr(text)
            except Exception:  # multiaddr raises a variety of errors
                raise P2PError(f"bad multiaddr in a peer list: {text[:80]!r}") from None
            ip = _ip_of(addr)
            if ip is not None and via is not None and _may_dial(ip, via):
                addrs.append(addr)
        if addrs:
            infos.append(PeerInfo(peer, addrs))
    return infos


def _bare(addr: multiaddr.Multiaddr) -> str:
    """The address without a trailing /p2p/<id> (the answer names the peer beside it)."""
    text = str(addr)
    return text.split("/p2p/")[0]


def _ip_of(addr: multiaddr.Multiaddr | str) -> IPAddress | None:
    """The IP of a plain TCP address (/ip4|ip6/HOST/tcp/PORT) on a unicast address, else None."""
    try:
        if isinstance(addr, str):
            addr = multiaddr.Multiaddr(addr)
        names = [p.name for p in addr.protocols()]
        if len(names) != 2 or names[0] not in _IPS or names[1] != "tcp":
            return None
        ip = ipaddress.ip_address(addr.value_for_protocol(names[0]))
        if int(addr.value_for_protocol("tcp")) == 0:
            return None
    except Exception:  # not an address we could dial
        return None
    if ip.is_loopback:
        return ip  # (IPv6's ::1 is in a block Python also calls reserved)
    if ip.is_unspecified or ip.is_multicast or ip.is_link_local or ip.is_reserved:
        return None
    return ip


def _remote_ip(stream: INetStream) -> IPAddress | None:
    """The IP the answering peer's connection comes from (None: unknown, nothing dialled)."""
    try:
        remote = stream.get_remote_address()
        return ipaddress.ip_address(remote[0]) if remote else None
    except Exception:  # a transport without an IP address
        return None


def _may_dial(ip: IPAddress, via: IPAddress) -> bool:
    """Whether an address a peer at `via` named is in a scope we dial: loopback only from a
    loopback peer, other non-global ranges (private, shared, documentation) only from a peer
    that is not on a global address itself, global ones from anyone."""
    if ip.is_loopback:
        return via.is_loopback
    if not ip.is_global:
        return not via.is_global
    return True
