"""The libp2p host, configured the only way py-libp2p 0.8.1 works reliably (see FIELD-NOTES):
TCP + Noise only, yamux, one connection per peer, gossipsub 1.1/1.0 with a 1 s heartbeat and
its spam limiter off, and Pubsub started before the host runs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import multiaddr
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.mcache import CacheEntry, MessageCache
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service.context import background_trio_service

from events.crypto import keccak256
from p2p.addrs import check_listen_addr, port_in_use
from p2p.config import P2PConfig
from p2p.errors import P2PError

MAX_RPC_BYTES = 1024 * 1024  # one gossip RPC frame; an event is at most 64 KiB


@dataclass(slots=True)
class RunningHost:
    """A started host with its pubsub; valid inside `running_host`."""

    host: IHost
    pubsub: Pubsub
    router: GossipSub

    @property
    def peer_id(self) -> str:
        return self.host.get_id().to_base58()

    def addrs(self) -> list[str]:
        """Full multiaddrs, `/p2p/<peer id>` included, that another node can bootstrap from."""
        me = self.peer_id
        out = []
        for addr in self.host.get_addrs():
            text = str(addr)
            out.append(text if "/p2p/" in text else f"{text}/p2p/{me}")
        return out


def message_id(msg: rpc_pb2.Message) -> bytes:
    """Content address: the same event gossiped by two peers is one message, seen once."""
    return keccak256(msg.data)


class _MessageCache(MessageCache):
    """py-libp2p's cache keys messages on `from + seqno`, so lazy gossip (IHAVE) advertised ids
    that no castnet peer knew as seen: every IHAVE was answered by an IWANT for messages the
    asker already had. Keyed on castnet's message id, IHAVE/IWANT speak the ids peers dedupe on
    (js and go peers set the same msgIdFn)."""

    def put(self, msg: rpc_pb2.Message) -> None:
        mid = message_id(msg)
        if mid in self.msgs:
            return
        self.msgs[mid] = msg
        self.history[0].append(CacheEntry(mid, msg.topicIDs))


class _GossipSub(GossipSub):
    """Gossipsub with the message cache above, and an equivocation check (same `from + seqno`,
    other content) only for messages that carry `from` and `seqno`: unsigned messages from
    StrictNoSign peers carry neither, and all shared one empty key, so only the first was
    forwarded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mcache = _MessageCache(self.mcache.window_size, self.mcache.history_size)

    def _check_equivocation(self, msg: rpc_pb2.Message) -> bool:
        if not msg.from_id or not msg.seqno:
            return True
        return bool(super()._check_equivocation(msg))


def build_host(key_pair: KeyPair, config: P2PConfig) -> IHost:
    # Noise only: py-libp2p's default stack also accepts /plaintext/2.0.0, TLS and secio.
    noise = NoiseTransport(key_pair, noise_privkey=new_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        listen_addrs=[multiaddr.Multiaddr(a) for a in config.listen],
        # one connection per peer: dials take ~19 ms instead of ~250 ms; no auto-connector, which
        # would redial every peer it ever saw (banned ones too) to reach 50 connections
        connection_config=ConnectionConfig(
            max_connections_per_peer=1, min_connections=0, low_watermark=0
        ),
        enable_mDNS=config.mdns,
    )


OUTBOUND_QUEUE = 512  # RPCs queued per peer before py-libp2p drops (its default: 32)


class _OutboundQueues(dict[ID, Any]):
    """py-libp2p's per-peer outbound queue holds 32 RPCs and drops the rest: on a busy node,
    forwarding (which has no back-pressure) overflowed it within a burst and the events arrived by
    sync seconds later. Each queue made for a new peer gets room for `OUTBOUND_QUEUE`; what still
    overflows is counted and reported by p2p.gossip's DropCounter."""

    def __setitem__(self, peer: ID, queue: Any) -> None:
        inner = getattr(queue, "_queue", None)
        if inner is not None and hasattr(inner, "max_size"):
            inner.max_size = OUTBOUND_QUEUE
        super().__setitem__(peer, queue)


class _Pubsub(Pubsub):
    """py-libp2p marks a message seen only after its validators finish, so every copy that
    arrives while the first is still being validated (ours wait for a durable append) is
    validated and forwarded again: on a full mesh each message was re-sent several times per
    node, queues overflowed and latency went to hundreds of ms. A copy of a message that is
    already in validation is dropped here, before validation, like a seen one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_validation: set[bytes] = set()
        self.peer_queues = _OutboundQueues()

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        msg_id = self._msg_id_constructor(msg)
        if msg_id in self._in_validation:
            return
        self._in_validation.add(msg_id)
        try:
            await super().push_msg(msg_forwarder, msg)
        finally:
            self._in_validation.discard(msg_id)


def build_pubsub(
    host: IHost, config: P2PConfig, topics: frozenset[str]
) -> tuple[Pubsub, GossipSub]:
    router = _GossipSub(
        protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],  # 1.2's IDONTWANT doubles CPU per message
        degree=config.degree,
        degree_low=config.degree_low,
        degree_high=config.degree_high,
        heartbeat_interval=config.heartbeat_s,
        prune_back_off=config.prune_back_off_s,
        spam_protection_enabled=False,  # 10 msg/s per (peer, topic), own messages counted
    )
    pubsub = _Pubsub(
        host,
        router,
        # libp2p message signing (gossipsub's StrictSign), although events carry their authors'
        # signatures: py-libp2p always sets `from` and `seqno`, and stock libp2p peers (js, go)
        # refuse such a message unless it is signed, so unsigned castnet gossip reached no one else
        strict_signing=True,
        msg_id_constructor=message_id,
        max_concurrent_validator_count=config.max_validators,
        validation_timeout=config.validation_timeout_s,
        # its cache would keep "invalid" for an event that was only early (held), refusing the
        # same event once its predecessor arrived: we cache nothing and dedupe in the store
        validation_cache_ttl=-1,
        validation_cache_size=1,
        max_inbound_rpc_size=MAX_RPC_BYTES,
        allowed_topics=topics,
    )
    return pubsub, router


@asynccontextmanager
async def running_host(
    key_pair: KeyPair,
    config: P2PConfig,
    topics: frozenset[str],
    before_listen: Callable[[RunningHost], None] = lambda _: None,
) -> AsyncIterator[RunningHost]:
    """Start pubsub and gossipsub, wait until ready, then run the host (closing in reverse).
    P2PError when a listen address is taken (by another program, or another node)."""
    for addr in config.listen:
        host_name, port = check_listen_addr(addr)
        reason = port_in_use(host_name, port)
        if reason is not None:
            raise P2PError(f"cannot listen on {addr}: {reason} (another program, or another "
                           "castnet node, holds that port: choose another listen port)"
                           )  # fmt: skip
    host = build_host(key_pair, config)
    pubsub, router = build_pubsub(host, config, topics)
    running = RunningHost(host, pubsub, router)
    async with background_trio_service(pubsub), background_trio_service(router):
        await pubsub.wait_until_ready()
        before_listen(running)
        listen = [multiaddr.Multiaddr(a) for a in config.listen]
        async with host.run(listen_addrs=listen):
            if not host.get_addrs():  # libp2p logs a failed listen and goes on without it
                raise P2PError(f"cannot listen on {', '.join(config.listen)}")
            yield running


def quiet_libp2p(level: int = logging.ERROR) -> None:
    """py-libp2p's logger does not propagate and prints WARNINGs to stderr by itself: route it
    through our handlers at `level` (its warnings are mostly noise from peers going away)."""
    logger = logging.getLogger("libp2p")
    logger.handlers.clear()
    logger.propagate = True
    logger.setLevel(level)
    for name, child in list(logging.root.manager.loggerDict.items()):
        # some modules pin their own level (auto_connector: INFO); the drop counter keeps DEBUG
        if name.startswith("libp2p.") and isinstance(child, logging.Logger) and child.propagate:
            child.setLevel(logging.NOTSET)
