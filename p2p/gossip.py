"""Gossip of signed events on the network's topic: a validator that decodes, bounds, verifies and
stores each event before gossipsub may forward it, and publishing with back-pressure."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from events.crypto import keccak256
from events.envelope import MAX_EVENT_BYTES, SignedEvent, decode
from events.errors import DecodeError, InvalidEvent
from events.kinds import kind_name
from p2p.config import P2PConfig
from p2p.guard import PeerGuard
from p2p.host import RunningHost
from p2p.ingest import Ingest
from storage.store import Outcome

log = logging.getLogger("castnet.p2p.gossip")
_BACKPRESSURE_POLL_S = 0.002
_INVALID_REMEMBERED = 10_000
_STUCK_S = 0.5


def describe(event: SignedEvent) -> str:
    return f"{kind_name(event.kind)} 0x{event.author.hex()[:8]}#{event.seq}"


def events_topic(network: str) -> str:
    """Every event of a network travels on one topic, so an author's chain keeps its order."""
    return f"/castnet/{network}/events/1"


class Gossip:
    """Owns the subscription of one topic and its validator."""

    def __init__(
        self,
        running: RunningHost,
        config: P2PConfig,
        ingest: Ingest,
        guard: PeerGuard,
        on_gap: Callable[[ID], None],
    ) -> None:
        self.running = running
        self.config = config
        self.ingest = ingest
        self.guard = guard
        self.on_gap = on_gap
        self.topic = events_topic(config.network)
        self.received = 0  # messages that reached our subscription (valid and forwarded)
        self.published = 0
        self.publish_delays = 0
        self._invalid: OrderedDict[bytes, None] = OrderedDict()
        self._queue_marks: dict[int, tuple[int, float]] = {}

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        pubsub = self.running.pubsub
        pubsub.set_topic_validator(self.topic, self.validate, is_async_validator=True)
        subscription = await pubsub.subscribe(self.topic)
        task_status.started()
        # Events are stored by the validator; the subscription (32 deep) only has to be drained.
        async for _ in subscription:
            self.received += 1

    async def validate(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """True lets gossipsub deliver and forward `msg`; only stored (or known) events pass."""
        if forwarder == self.running.host.get_id():
            return True  # our own events are published only once durable
        data = msg.data
        digest = keccak256(data)
        if digest in self._invalid:
            return False  # offered again (gossip IHAVE/IWANT): rejected and logged already
        if len(data) > MAX_EVENT_BYTES:
            return self._reject(digest, forwarder, "gossip message", f"{len(data)} bytes")
        try:
            event = decode(data)
            event.verify()
        except DecodeError as exc:
            return self._reject(digest, forwarder, "gossip message", f"not an event: {exc}")
        except InvalidEvent as exc:
            return self._reject(digest, forwarder, "gossip event", f"bad signature: {exc}")
        (result,) = await self.ingest.submit([event], forwarder.to_base58())
        outcome = result.outcome
        if outcome is Outcome.GAP:
            self.on_gap(forwarder)  # held; sync with the forwarder fetches what is missing
            return False
        if outcome is Outcome.BROKEN_CHAIN:
            reason = f"event {event.id.hex()[:16]} breaks its author's chain"
            return self._reject(digest, forwarder, "gossip event", reason)
        if outcome is Outcome.APPENDED:
            log.info("event %s from %s", describe(event), forwarder.to_base58())
        # appended, already known, or an equivocation (evidence worth spreading)
        return True

    def _blocking_queues(self, high: int) -> int:
        """Peer queues at or above `high` that still drain; one whose length has not moved for
        `_STUCK_S` has a dead sender loop in py-libp2p and would block us for nothing."""
        now = trio.current_time()
        blocking = 0
        seen: dict[int, tuple[int, float]] = {}
        for queue in list(self.running.pubsub.peer_queues.values()):
            size = len(queue)
            last_size, since = self._queue_marks.get(id(queue), (size, now))
            since = since if size == last_size else now
            seen[id(queue)] = (size, since)
            if size >= high and now - since < _STUCK_S:
                blocking += 1
        self._queue_marks = seen
        return blocking

    def _reject(self, digest: bytes, forwarder: ID, what: str, reason: str) -> bool:
        self._invalid[digest] = None
        if len(self._invalid) > _INVALID_REMEMBERED:
            self._invalid.popitem(last=False)
        self.guard.reject(forwarder, what, reason)
        return False

    async def publish(self, raw: bytes) -> None:
        """Publish a durable event. py-libp2p drops silently when a peer's 32-deep outbound queue
        is full, so wait (bounded) until every queue has room, then yield: publish never does."""
        pubsub = self.running.pubsub
        high = self.config.publish_queue_high
        deadline = trio.current_time() + self.config.publish_wait_s
        waited = False
        while self._blocking_queues(high):
            if trio.current_time() > deadline:
                log.warning(
                    "a peer's gossip queue stayed full for %g s; publishing anyway (peers that "
                    "miss the event fetch it by sync)", self.config.publish_wait_s,
                )  # fmt: skip
                break
            waited = True
            await trio.sleep(_BACKPRESSURE_POLL_S)
        self.publish_delays += waited
        await pubsub.publish(self.topic, raw)
        self.published += 1
        await trio.sleep(0)


class DropCounter(logging.Handler):
    """Counts py-libp2p's outbound drops (full peer queue), which it only logs at DEBUG, and
    reports them as warnings at most every `every_s` seconds, so no loss is silent."""

    def __init__(self, every_s: float = 10.0) -> None:
        super().__init__(logging.DEBUG)
        self.dropped = 0
        self.every_s = every_s
        self._reported = 0
        self._last = -every_s

    def emit(self, record: logging.LogRecord) -> None:
        if not record.getMessage().startswith("Dropping outbound RPC"):
            return
        self.dropped += 1
        now = record.created
        if now - self._last >= self.every_s:
            log.warning(
                "gossip dropped %d outbound messages (peer queue full); peers catch up by sync",
                self.dropped - self._reported,
            )
            self._reported = self.dropped
            self._last = now


DROPS = DropCounter()


def install_drop_counter() -> DropCounter:
    """Attach the process-wide drop counter to py-libp2p's rpc_queue logger (idempotent)."""
    logger = logging.getLogger("libp2p.pubsub.rpc_queue")
    if DROPS not in logger.handlers:
        logger.addHandler(DROPS)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    return DROPS
