"""The libp2p host, configured the only way py-libp2p 0.8.1 works reliably (see FIELD-NOTES):
TCP + Noise only, yamux, one connection per peer, gossipsub 1.1/1.0 with a 1 s heartbeat and
its spam limiter off, and Pubsub started before the host runs."""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.exceptions import ParseError
from libp2p.io.exceptions import IOException, MessageTooLarge
from libp2p.network.config import ConnectionConfig
from libp2p.network.connection.exceptions import RawConnError
from libp2p.network.stream.exceptions import StreamEOF, StreamError
from libp2p.network.stream.net_stream import INetStream
from libp2p.peer.id import ID
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.pubsub import gossipsub as _gossipsub_module
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.mcache import CacheEntry, MessageCache
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import GossipsubEvent, Pubsub
from libp2p.pubsub.utils import maybe_consume_signed_record
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service.context import background_trio_service

from events.crypto import keccak256
from p2p.addrs import check_listen_addr, port_in_use
from p2p.config import P2PConfig
from p2p.connections import limit_inbound_per_ip, limit_inbound_streams, release_inbound_slots
from p2p.errors import P2PError
from p2p.muxer import batch_window_updates
from p2p.quicklocks import install_quick_locks
from p2p.rpc_reader import RpcReader
from p2p.wire import use_lean_wire

log = logging.getLogger("castnet.p2p.host")
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


_IDS_REMEMBERED = 512  # message objects in flight at once, with room to spare


class _MessageIds:
    """Content address: the same event gossiped by two peers is one message, seen once.

    py-libp2p asks for the id of each received copy several times (the seen check, the
    validation cache, the validator, the mark as seen, the message cache), and hashing a batch
    of 64 events costs ~50 us each time: the id is kept per message object (by identity,
    holding the object, so an id is never reused for another message)."""

    def __init__(self) -> None:
        self._ids: dict[int, tuple[rpc_pb2.Message, bytes]] = {}

    def __call__(self, msg: rpc_pb2.Message) -> bytes:
        known = self._ids.get(id(msg))
        if known is not None and known[0] is msg:
            return known[1]
        mid = keccak256(msg.data)
        if len(self._ids) >= _IDS_REMEMBERED:
            del self._ids[next(iter(self._ids))]  # the oldest
        self._ids[id(msg)] = (msg, mid)
        return mid


message_id = _MessageIds()


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
    forwarded. Without py-libp2p's peer scorer: with its default parameters (every threshold
    -inf, every weight 0) it gates nothing, yet scored each mesh peer three times for every
    message sent; castnet's own penalties (p2p.guard) decide which peers are banned."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mcache = _MessageCache(self.mcache.window_size, self.mcache.history_size)
        self.scorer = None

    def _check_equivocation(self, msg: rpc_pb2.Message) -> bool:
        if not msg.from_id or not msg.seqno:
            return True
        return bool(super()._check_equivocation(msg))


def build_host(key_pair: KeyPair, config: P2PConfig) -> IHost:
    # Noise only: py-libp2p's default stack also accepts /plaintext/2.0.0, TLS and secio.
    noise = NoiseTransport(key_pair, noise_privkey=new_x25519_key_pair().private_key)
    host = new_host(
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
    limit_inbound_per_ip(host.get_network(), config.inbound_per_ip)
    return host


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


INFLIGHT_PER_PEER = 8  # a peer's gossip messages in validation at once; then reading pauses
_RECORD_TTL_S = 5.0  # how long our own signed peer record is reused without a fresh check
_RECORDS_REMEMBERED = 4096


def _cached_envelope(host: IHost) -> tuple[bytes, bool]:
    """py-libp2p's gossipsub attaches our signed peer record to every message it forwards and
    rebuilds the host's address list each time to check it is current (about 1 ms of CPU per
    message): reuse it for `_RECORD_TTL_S`."""
    now = time.monotonic()
    cached = _ENVELOPES.get(host)
    if cached is not None and now < cached[0]:
        return cached[1], False
    envelope, fresh = env_to_send_in_RPC(host)
    _ENVELOPES[host] = (now + _RECORD_TTL_S, envelope)
    return envelope, fresh


_ENVELOPES: weakref.WeakKeyDictionary[IHost, tuple[float, bytes]] = weakref.WeakKeyDictionary()
_gossipsub_module.env_to_send_in_RPC = _cached_envelope  # type: ignore[attr-defined]
batch_window_updates()
limit_inbound_streams()
release_inbound_slots()
install_quick_locks()
use_lean_wire()


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
        self._records: dict[ID, bytes] = {}  # the signed peer record each peer last sent
        self._pending: dict[ID, int] = {}  # each peer's messages in validation (flow control)
        self._slots: set[tuple[ID, bytes]] = set()  # (peer, message id) holding a place
        self._validating: set[tuple[ID, bytes]] = set()  # holding a validator slot
        self._room: dict[ID, trio.Event] = {}
        # per peer, messages take turns in arrival order up to queueing their append (validation
        # runs one task per message, and trio may start them in any order: a chain's events then
        # reached the store out of order and waited for each other)
        self._tickets: dict[tuple[ID, bytes], int] = {}
        self._issued: dict[ID, int] = {}
        self._serving: dict[ID, int] = {}
        self._finished: dict[ID, set[int]] = {}
        self._turn_changed: dict[ID, trio.Event] = {}

    async def continuously_read_stream(self, stream: INetStream) -> None:
        """Read a peer's RPCs (py-libp2p's loop, with buffered reads and each peer's signed
        record verified once, not in every RPC: it is the same bytes every time)."""
        peer = stream.muxed_conn.peer_id
        reader = RpcReader(stream, self.max_inbound_rpc_size)
        try:
            while self.manager.is_running:
                frame = await reader.next()
                rpc = rpc_pb2.RPC()
                try:
                    rpc.ParseFromString(frame)
                except Exception as exc:  # protobuf's DecodeError
                    raise ParseError(f"bad pubsub RPC: {exc}") from None
                if rpc.HasField("senderRecord") and not self._consume_record(peer, rpc):
                    continue
                for msg in rpc.publish:
                    if self._is_subscribed_to_msg(msg) and self.manager.is_running:
                        msg_id = self._msg_id_constructor(msg)
                        if self.seen_messages.has(msg_id) or msg_id in self._in_validation:
                            continue  # a copy (most are): dropped before a task is started for it
                        await self._wait_for_room(peer)
                        slot = (peer, msg_id)
                        if slot in self._slots:
                            continue  # the same message again while its copy is in validation
                        self._slots.add(slot)
                        self._pending[peer] = self._pending.get(peer, 0) + 1
                        self._tickets[slot] = self._issued.get(peer, 0)
                        self._issued[peer] = self._tickets[slot] + 1
                        self.manager.run_task(self._push_counted, peer, msg, slot[1])
                if rpc.subscriptions:
                    if len(rpc.subscriptions) > self.max_subscriptions_per_rpc:
                        log.warning("peer %s sent %d subscriptions in one RPC, over %d: ignored",
                                    peer, len(rpc.subscriptions), self.max_subscriptions_per_rpc
                                    )  # fmt: skip
                    else:
                        for sub in rpc.subscriptions:
                            self.handle_subscription(peer, sub)
                if rpc.HasField("control"):
                    await self.router.handle_rpc(rpc, peer)
                if stream.metric_send_channel is not None:
                    event = GossipsubEvent()
                    event.peer_id = peer.pretty()
                    event.message_size = len(frame)
                    event.publish = bool(rpc.publish)
                    event.subopts = bool(rpc.subscriptions)
                    event.control = rpc.HasField("control")
                    await stream.metric_send_channel.send(event)
        except MessageTooLarge as exc:
            log.warning("peer %s: %s; closing its pubsub stream", peer, exc)
            with contextlib.suppress(Exception):
                await stream.reset()
            self._handle_dead_peer(peer)
        except (StreamEOF, StreamError, IOException, RawConnError):
            pass  # the peer went away (IncompleteReadError is handled by stream_handler)
        finally:
            self._records.pop(peer, None)
            for table in (self._issued, self._serving, self._finished, self._turn_changed):
                table.pop(peer, None)  # type: ignore[attr-defined]

    async def turn(self, peer: ID, msg_id: bytes) -> None:
        """Wait until every earlier message read from `peer` has passed its turn (queued its
        append, or ended); a message not read by this loop (our own) does not wait."""
        ticket = self._tickets.get((peer, msg_id))
        if ticket is None:
            return
        while self._serving.get(peer, 0) < ticket and (peer, msg_id) in self._tickets:
            changed = self._turn_changed.get(peer)
            if changed is None:
                changed = self._turn_changed[peer] = trio.Event()
            await changed.wait()

    def pass_turn(self, peer: ID, msg_id: bytes) -> None:
        """The message's append is queued (or it ended): later messages of `peer` may go."""
        ticket = self._tickets.pop((peer, msg_id), None)
        if ticket is None:
            return
        finished = self._finished.setdefault(peer, set())
        finished.add(ticket)
        serving = self._serving.get(peer, 0)
        while serving in finished:
            finished.discard(serving)
            serving += 1
        self._serving[peer] = serving
        changed = self._turn_changed.pop(peer, None)
        if changed is not None:
            changed.set()

    async def _wait_for_room(self, peer: ID) -> None:
        """Flow control: stop reading a peer's stream while `INFLIGHT_PER_PEER` of its messages
        are in validation. py-libp2p starts a task per message without limit, so a busy node
        piled up seconds of work, its messages' successors timed out waiting for them and were
        fetched by sync; now the backlog stays in the peer's queue and TCP, and a publisher
        slows down (p2p.gossip waits while a peer queue is full)."""
        while self._pending.get(peer, 0) >= INFLIGHT_PER_PEER:
            room = self._room.get(peer)
            if room is None:
                room = self._room[peer] = trio.Event()
            await room.wait()

    async def _push_counted(self, peer: ID, msg: rpc_pb2.Message, msg_id: bytes) -> None:
        try:
            await self.push_msg(peer, msg)
        finally:
            self.pass_turn(peer, msg_id)
            self.release(peer, msg_id)

    async def _run_async_validator(
        self, func: Any, msg_forwarder: ID, msg: rpc_pb2.Message, results: list[bool]
    ) -> None:
        """py-libp2p's, with a validator slot that `release` can give back before the end."""
        key = (msg_forwarder, self._msg_id_constructor(msg))
        await self._validator_semaphore.acquire()
        self._validating.add(key)
        try:
            results.append(await func(msg_forwarder, msg))
        finally:
            if key in self._validating:
                self._validating.discard(key)
                self._validator_semaphore.release()

    def release(self, peer: ID, msg_id: bytes) -> None:
        """Give back the places a message of `peer` holds, its validator slot and its place in
        the peer's flow control: when its validation ends, or earlier when it only waits for
        events that other messages bring (held, it must not keep its own predecessors, often
        right behind it on the same stream, from being read and validated)."""
        if (peer, msg_id) in self._validating:
            self._validating.discard((peer, msg_id))
            self._validator_semaphore.release()
        if (peer, msg_id) not in self._slots:
            return
        self._slots.discard((peer, msg_id))
        left = self._pending.get(peer, 1) - 1
        if left > 0:
            self._pending[peer] = left
        else:
            self._pending.pop(peer, None)
        room = self._room.pop(peer, None)
        if room is not None:
            room.set()

    def _consume_record(self, peer: ID, rpc: rpc_pb2.RPC) -> bool:
        record = rpc.senderRecord
        if self._records.get(peer) == record:
            return True
        if not maybe_consume_signed_record(rpc, self.host, peer):
            return False
        if len(self._records) >= _RECORDS_REMEMBERED:
            self._records.pop(next(iter(self._records)))
        self._records[peer] = record
        return True

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        msg_id = self._msg_id_constructor(msg)
        if msg_id in self._in_validation:
            return
        self._in_validation.add(msg_id)
        try:
            await super().push_msg(msg_forwarder, msg)
        finally:
            self._in_validation.discard(msg_id)

    async def _teardown_if_connected(self, peer_id: ID) -> None:
        """py-libp2p's (run when a peer is blacklisted), safe when the peer's stream dies as it
        is reset: its own teardown removes the peer meanwhile, and py-libp2p's `del` then raised
        KeyError, which ended this node's pubsub (seen disconnecting a peer on another network)."""
        stream = self.peers.get(peer_id)
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.reset()
            if self.peers.get(peer_id) is stream:
                del self.peers[peer_id]
        self._forget_all_subscriptions(peer_id)


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
