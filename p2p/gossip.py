"""Gossip of signed events on the network's topic: a validator that decodes, bounds, verifies,
admits and chain-checks each event before gossipsub may forward it (the durable append goes on
meanwhile), and publishing with back-pressure.

A gossip message carries a batch of events (a msgpack array of raw events). py-libp2p spends
about a millisecond of CPU per message on every node it reaches, whatever its size, so under
load the publisher packs what accumulated while the previous message was going out into the
next one; a lone event still goes out at once, alone."""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import msgpack
import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from events.envelope import MAX_EVENT_BYTES, SignedEvent, decode
from events.errors import DecodeError, InvalidEvent
from p2p.admission import Admission
from p2p.config import P2PConfig
from p2p.guard import PeerGuard
from p2p.host import RunningHost, message_id
from p2p.ingest import Ingest
from storage.service import Pending
from storage.store import Outcome

log = logging.getLogger("castnet.p2p.gossip")
_BACKPRESSURE_POLL_S = 0.002
_INVALID_REMEMBERED = 10_000
_STUCK_S = 0.5
_RELEASE_GRACE_S = 0.5
MAX_BATCH_EVENTS = 64
# Under load (a message went out less than BUSY_S ago) the next one waits up to FLUSH_WINDOW_S
# for the outbox to fill: one message of 64 events costs each node about what one of 1 does.
# After a quiet spell an event goes out at once.
FLUSH_WINDOW_S = 0.005
BUSY_S = 0.05
MAX_BATCH_BYTES = 256 * 1024
# Forwarding before the durable append is done stops while this many events wait for their
# commit (about one full transaction): then validations wait for it, and so do peers' streams.
MAX_QUEUED_EVENTS = 2048
_FAILURE_LOG_S = 10.0


def encode_batch(raws: list[bytes]) -> bytes:
    return msgpack.packb(raws, use_bin_type=True)


def decode_batch(data: bytes) -> list[SignedEvent]:
    """The events of one gossip message, each decoded and signature-checked."""
    if len(data) > MAX_BATCH_BYTES + 16:
        raise DecodeError(f"{len(data)} bytes, over the {MAX_BATCH_BYTES} byte batch limit")
    try:
        raws = msgpack.unpackb(
            data, use_list=True, raw=True, max_array_len=MAX_BATCH_EVENTS,
            max_bin_len=MAX_EVENT_BYTES, max_str_len=0, max_map_len=0, max_ext_len=0,
        )  # fmt: skip
    except (ValueError, msgpack.UnpackException) as exc:
        raise DecodeError(f"not a batch of events: {exc}") from None
    if not isinstance(raws, list) or not raws or not all(isinstance(r, bytes) for r in raws):
        raise DecodeError("not a non-empty array of events")
    events = [decode(raw) for raw in raws]
    for event in events:
        event.verify()
    return events


def events_topic(network: str) -> str:
    """Every event of a network travels on one topic, so an author's chain keeps its order."""
    return f"/castnet/{network}/events/2"


class Gossip:
    """Owns the subscription of one topic and its validator."""

    def __init__(
        self,
        running: RunningHost,
        config: P2PConfig,
        ingest: Ingest,
        guard: PeerGuard,
        on_gap: Callable[[ID], None],
        admission: Admission | None = None,
    ) -> None:
        self.running = running
        self.config = config
        self.ingest = ingest
        self.guard = guard
        self.on_gap = on_gap
        self.admission = admission
        self.topic = events_topic(config.network)
        self.received = 0  # messages that reached our subscription (valid and forwarded)
        # when gossip last carried an event: stored one received, or queued one of ours (a node
        # that publishes is ahead of its peers; a sync session then makes them pull back events
        # that are on their way to them)
        self.last_delivery = -math.inf
        self.published = 0  # events gossiped
        self.messages = 0  # gossip messages they went out in
        self.resubmitted = 0  # held events submitted again by a waiting validation
        self.publish_delays = 0
        self._invalid: OrderedDict[bytes, None] = OrderedDict()
        self._queue_marks: dict[int, tuple[int, float]] = {}
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._wake = trio.Event()
        self._room = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.forward_backlog = MAX_QUEUED_EVENTS  # 0: every forward waits for its commit
        self.store_failures = 0  # forwarded messages whose append then failed
        self._failure_logged = -math.inf

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        pubsub = self.running.pubsub
        pubsub.set_topic_validator(self.topic, self.validate, is_async_validator=True)
        subscription = await pubsub.subscribe(self.topic)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._flush_outbox)
            self._nursery = nursery
            task_status.started()
            # Events are stored by the validator; the subscription (32 deep) is only drained.
            try:
                async for _ in subscription:
                    self.received += 1
            finally:
                self._nursery = None

    async def validate(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """True lets gossipsub deliver and forward `msg`: only events the store takes (queued in
        order, durable soon after) or knows already pass."""
        if forwarder == self.running.host.get_id():
            return True  # our own events are published only once durable
        data = msg.data
        digest = message_id(msg)
        pubsub = self.running.pubsub
        turn = getattr(pubsub, "turn", None)  # p2p.host: one peer's messages in arrival order
        if turn is not None:
            await turn(forwarder, digest)
        try:
            checked = self._check(forwarder, digest, data)
            if isinstance(checked, bool):
                return checked
            events, held = checked
            backlog = self.ingest.queued
            pending, foreseen = self.ingest.enqueue(events)
        finally:
            pass_turn = getattr(pubsub, "pass_turn", None)
            if pass_turn is not None:
                pass_turn(forwarder, digest)
        via = forwarder.to_base58()
        if (foreseen or held) and self._nursery is not None and backlog < self.forward_backlog:
            # Verified, admitted, and linking to the chain as queued: forward now while the
            # append becomes durable (a node that dies before its commit gets them back by sync).
            # Never forward what we did not admit; the admitted part is stored all the same.
            self._nursery.start_soon(self._complete, events, via, pending)
            return not held
        results = await self.ingest.complete(events, via, pending)
        if held:
            return False
        gapped = []
        for event, result in zip(events, results, strict=True):
            outcome = result.outcome
            if outcome is Outcome.BROKEN_CHAIN:
                reason = f"event {event.id.hex()[:16]} breaks its author's chain"
                return self._reject(digest, forwarder, "gossip event", reason)
            if outcome is Outcome.GAP:
                gapped.append(event)
            elif outcome is Outcome.APPENDED:
                self.last_delivery = trio.current_time()
        if gapped:
            # held: its predecessor is mostly a message still in validation (messages overtake
            # each other). Forward it once that is stored, so the rest of the mesh gets it by
            # gossip; if it does not come soon, sync with the forwarder fetches what is missing
            # (asking at once would race gossip and fetch what is already on its way).
            # Under load the predecessor is mostly queued behind other messages: wait while the
            # chains it belongs to keep growing, and ask sync only once they stalled for
            # gap_wait_s (or the wait nears the validation timeout).
            release = getattr(self.running.pubsub, "release", None)
            if release is not None:  # p2p.host's flow control: waiting holds no place
                release(forwarder, digest)
            if await self._wait_for_predecessors(gapped):
                return True
            first = min(gapped, key=lambda e: (e.author, e.seq))
            log.info(
                "%d events from %s still miss their predecessors (nothing stored for %g s; "
                "first 0x%s#%d waits for #%d); syncing from it", len(gapped),
                forwarder.to_base58(), self.config.gap_wait_s, first.author.hex()[:8], first.seq,
                self.ingest.heads.get(first.author, 0) + 1,
            )  # fmt: skip
            self.on_gap(forwarder)
            return False
        # appended, already known, or an equivocation (evidence worth spreading)
        return True

    async def _complete(self, events: list[SignedEvent], via: str, pending: Pending) -> None:
        """The end of an append whose message was forwarded already."""
        try:
            results = await self.ingest.complete(events, via, pending)
        except Exception as exc:  # the commit failed (the disk): logged at most every 10 s
            self.store_failures += 1
            now = trio.current_time()
            if now - self._failure_logged >= _FAILURE_LOG_S:
                self._failure_logged = now
                log.error("could not store %d events from %s (%d failed appends so far): %s",
                          len(events), via, self.store_failures, exc)  # fmt: skip
            return
        if any(result.outcome is Outcome.APPENDED for result in results):
            self.last_delivery = trio.current_time()

    def _check(
        self, forwarder: ID, digest: bytes, data: bytes
    ) -> bool | tuple[list[SignedEvent], int]:
        """Decode, verify and admit a message's events: (events to store, how many admission
        held back), or the validation's answer when none is left to store."""
        if digest in self._invalid:
            return False  # offered again (gossip IHAVE/IWANT): rejected and logged already
        try:
            events = decode_batch(data)
        except DecodeError as exc:
            return self._reject(digest, forwarder, "gossip message", str(exc))
        except InvalidEvent as exc:
            return self._reject(digest, forwarder, "gossip event", f"bad signature: {exc}")
        held = 0
        if self.admission is not None:
            events, held = self.admission.filter(events, forwarder.to_base58(), trio.current_time())
            if held:  # junk relayed: gossipsub-level penalty for the peer, logged in aggregate
                self.guard.penalize(forwarder, self.admission.config.penalty, "held-back events")
            if not events:  # copies of it are dropped before decoding, without more penalty
                self._remember_invalid(digest)
                return False
        return events, held

    async def _wait_for_predecessors(self, gapped: list[SignedEvent]) -> bool:
        """True once every gapped event's chain reached it; False when this node stored
        nothing for `gap_wait_s` (gossip went quiet, and the predecessor with it), or after
        most of the validation timeout. While events keep arriving, the predecessor is mostly
        queued on another path (a relay's queue behind flow control): asking sync then fetches
        what gossip is already bringing, at a higher cost. An event whose predecessor is stored
        but that is still not (a release cut short) is submitted again from here."""
        heads = self.ingest.heads
        ingest = self.ingest
        # every append wakes every waiting message: checks per author, not per event
        seqs: dict[bytes, set[int]] = {}
        for e in gapped:
            seqs.setdefault(e.author, set()).add(e.seq)
        last = {author: max(s) for author, s in seqs.items()}

        def total() -> int:
            return ingest.appended

        def done() -> bool:
            return all(heads.get(author, 0) >= seq for author, seq in last.items())

        def ready() -> bool:
            """A gapped event's predecessor is stored, the event itself not yet."""
            return any(heads.get(author, 0) + 1 in s for author, s in seqs.items())

        limit = max(self.config.gap_wait_s, self.config.validation_timeout_s * 0.8)
        with trio.move_on_after(limit):
            while True:
                if done():
                    return True
                progress = total()
                with trio.move_on_after(self.config.gap_wait_s):
                    while total() == progress and not ready():
                        await self.ingest.wait_changed()
                if done():
                    return True
                if ready():
                    with trio.move_on_after(_RELEASE_GRACE_S):  # the usual release, under way
                        while ready():
                            await self.ingest.wait_changed()
                    if ready():
                        missing = [e for e in gapped if heads.get(e.author, 0) < e.seq]
                        missing.sort(key=lambda e: (e.author, e.seq))
                        await self.ingest.submit(missing, "holding")
                        self.resubmitted += len(missing)
                        log.info("%d held events were not released when their chains caught "
                                 "up; submitted again", len(missing))  # fmt: skip
                    continue
                if total() == progress:
                    return False  # stalled for gap_wait_s
        return False

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

    def _remember_invalid(self, digest: bytes) -> None:
        self._invalid[digest] = None
        if len(self._invalid) > _INVALID_REMEMBERED:
            self._invalid.popitem(last=False)

    def _reject(self, digest: bytes, forwarder: ID, what: str, reason: str) -> bool:
        self._remember_invalid(digest)
        self.guard.reject(forwarder, what, reason)
        return False

    async def publish(self, raw: bytes) -> None:
        """Queue a durable event for gossip. Waits (bounded) while the outbox is full, so a
        fast publisher is slowed to what the network takes instead of losing events."""
        deadline = trio.current_time() + self.config.publish_wait_s
        while self._outbox_full(len(raw)) and trio.current_time() < deadline:
            if self._room.is_set():
                self._room = trio.Event()
            with trio.move_on_at(deadline):
                await self._room.wait()
        self._outbox.append(raw)
        self._outbox_bytes += len(raw)
        self.last_delivery = trio.current_time()
        self._wake.set()
        await trio.sleep(0)

    def _outbox_full(self, incoming: int) -> bool:
        return bool(self._outbox) and (
            len(self._outbox) >= MAX_BATCH_EVENTS or self._outbox_bytes + incoming > MAX_BATCH_BYTES
        )

    async def _flush_outbox(self) -> None:
        """Send what the outbox holds as one message, then the next; each send waits until
        every peer queue has room (py-libp2p drops silently when a 32-deep queue is full)."""
        last_sent = -math.inf
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._outbox:
                if trio.current_time() - last_sent < BUSY_S:
                    with trio.move_on_after(FLUSH_WINDOW_S):
                        while not self._outbox_full(0):
                            await self._wake.wait()
                            self._wake = trio.Event()
                batch, self._outbox, self._outbox_bytes = self._outbox, [], 0
                self._room.set()
                await self._wait_for_queues()
                await self.running.pubsub.publish(self.topic, encode_batch(batch))
                last_sent = trio.current_time()
                self.published += len(batch)
                self.messages += 1
                await trio.sleep(0)

    async def _wait_for_queues(self) -> None:
        deadline = trio.current_time() + self.config.publish_wait_s
        waited = False
        while self._blocking_queues(self.config.publish_queue_high):
            if trio.current_time() > deadline:
                log.warning(
                    "a peer's gossip queue stayed full for %g s; publishing anyway (peers that "
                    "miss the event fetch it by sync)", self.config.publish_wait_s,
                )  # fmt: skip
                break
            waited = True
            await trio.sleep(_BACKPRESSURE_POLL_S)
        self.publish_delays += waited


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
