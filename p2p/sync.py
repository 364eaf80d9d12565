"""Anti-entropy sync, `/castnet/sync/1`: the asking node sends its network id and the head of every
author it knows; the answering node streams, in bounded batches on that one stream, the events
after those heads. Run on connect, on a gossip gap, and periodically, so gossip loss never means
permanent loss.

Messages: HELLO `[1, version, network, [[author, seq, id], ...]]`, EVENTS `[2, [raw, ...]]`,
DONE `[3, count]`, ERROR `[4, code, text]`.

Job chains (a pair's job-level events) are not part of that exchange: neither side announces
them and a default session never sends them. A HELLO with a fifth element, a list of addresses,
asks for those authors only and for every job chain held here that speaks for or towards one of
them (`[1, version, network, heads, [address, ...]]`): how a counterparty fills a gap in a job
chain and how an auditor fetches a party's job chains.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.network.stream.net_stream import INetStream
from libp2p.peer.id import ID
from libp2p.protocol_muxer.exceptions import MultiselectClientError, ProtocolNotSupportedError

from events.crypto import ADDRESS_LEN, keccak256
from events.envelope import ID_LEN, SignedEvent, decode_verified
from events.errors import EventError
from p2p.admission import Admission
from p2p.config import P2PConfig
from p2p.errors import P2PError, ProtocolError, StreamClosed, StreamTimeout, WrongNetwork
from p2p.framing import MessageStream, pack_message
from p2p.guard import PeerGuard
from p2p.host import RunningHost
from p2p.ingest import Ingest
from p2p.jobchains import JobChains
from storage.store import EventStore, Outcome

SYNC_PROTOCOL = TProtocol("/castnet/sync/1")
VERSION = 1
_NOT_SUPPORTED = "not supported"  # in py-libp2p's negotiation error
HELLO, EVENTS, DONE, ERROR = 1, 2, 3, 4
WRONG_NETWORK = "wrong-network"
HEADS_RECORD_S = 30.0  # a peer's announced heads are stored at most this often
MAX_WANT = 256  # addresses in one author-limited request
_EXCLUDED = (2**62, b"")  # a head that no stored event is past: that author is not sent
log = logging.getLogger("castnet.p2p.sync")

Heads = dict[bytes, tuple[int, bytes]]  # author -> (seq, id) as a peer announced them


def parse_heads(items: Any, limit: int) -> Heads:
    if not isinstance(items, list) or len(items) > limit:
        raise ProtocolError(f"heads must be a list of at most {limit} entries")
    heads: Heads = {}
    for item in items:
        if not isinstance(item, list) or len(item) != 3:
            raise ProtocolError("a head is [author, seq, id]")
        author, seq, eid = item
        if type(author) is not bytes or len(author) != ADDRESS_LEN:
            raise ProtocolError("a head's author is a 20-byte address")
        if type(seq) is not int or not 0 < seq < 2**63:
            raise ProtocolError(f"bad head seq {seq!r}")
        if type(eid) is not bytes or len(eid) != ID_LEN:
            raise ProtocolError("a head's id has 32 bytes")
        heads[author] = (seq, eid)
    return heads


def parse_want(items: Any) -> list[bytes]:
    if not isinstance(items, list) or not 0 < len(items) <= MAX_WANT:
        raise ProtocolError(f"an author-limited request names 1..{MAX_WANT} addresses")
    if any(type(a) is not bytes or len(a) != ADDRESS_LEN for a in items):
        raise ProtocolError("an author-limited request names 20-byte addresses")
    return list(items)


def verify_batch(raws: Any, max_events: int) -> list[SignedEvent]:
    """Decode and check the signature of every event of a batch (run in a worker thread)."""
    if not isinstance(raws, list) or len(raws) > max_events:
        raise ProtocolError(f"a batch is a list of at most {max_events} events")
    events = []
    for raw in raws:
        if type(raw) is not bytes:
            raise ProtocolError("a batch holds raw events")
        try:
            events.append(decode_verified(raw))
        except EventError as exc:
            raise ProtocolError(f"invalid event in sync batch: {exc}") from None
    return events


def _batches(rows: Sequence[bytes], max_bytes: int) -> list[list[bytes]]:
    out: list[list[bytes]] = [[]]
    size = 0
    for raw in rows:
        if out[-1] and size + len(raw) > max_bytes:
            out.append([])
            size = 0
        out[-1].append(raw)
        size += len(raw) + 8
    return [b for b in out if b]


class Sync:
    """Both sides of the protocol, plus a scheduler that runs at most one session per peer."""

    def __init__(
        self,
        running: RunningHost,
        config: P2PConfig,
        store: EventStore,
        ingest: Ingest,
        guard: PeerGuard,
        admission: Admission | None = None,
        last_gossip: Callable[[], float] = lambda: -math.inf,
        jobs: JobChains | None = None,
    ) -> None:
        self.running = running
        self.jobs = jobs or JobChains(config.network)
        self.last_gossip = last_gossip
        self.admission = admission
        self.config = config
        self.store = store
        self.ingest = ingest
        self.guard = guard
        self.served = 0  # events sent to peers
        self.fetched = 0  # events received from peers
        self.stored = 0  # of which new to us: what gossip had missed
        self.sessions = 0
        self._in_flight: set[ID] = set()
        self._no_sync: set[ID] = set()  # peers that do not speak the sync protocol
        self._again: set[ID] = set()
        self._requests_send, self._requests = trio.open_memory_channel[ID](math.inf)
        self.wrong_network: set[str] = set()
        self._heads_recorded: dict[ID, tuple[float, bytes]] = {}  # peer -> (when, digest)

    # -- answering -------------------------------------------------------------------------

    async def handle(self, stream: INetStream) -> None:
        if await self.guard.refused(stream):
            return
        peer = stream.muxed_conn.peer_id
        ms = MessageStream(stream, self.config.max_frame_bytes, self.config.frame_timeout_s)
        try:
            hello = await ms.receive()
            if hello[0] != HELLO or len(hello) not in (4, 5):
                raise ProtocolError(f"expected a HELLO of 4 or 5 fields, got {hello[0]}")
            _, version, network, raw_heads = hello[:4]
            if network != self.config.network:
                await ms.send([ERROR, WRONG_NETWORK, f"this node runs {self.config.network!r}"])
                self._wrong_network(peer, network)
                return
            if version != VERSION:
                raise ProtocolError(f"unsupported sync version {version!r}")
            heads = parse_heads(raw_heads, self.config.sync_max_heads)
            if len(hello) == 5:
                want = self._wanted(parse_want(hello[4]))
                sent = await self._serve_authors(ms, heads, want)
                await ms.send([DONE, sent])
                return
            private = self.jobs.private()
            sent = await self._serve(ms, {**heads, **dict.fromkeys(private, _EXCLUDED)})
            if any(
                seq > self.ingest.heads.get(a, 0)
                for a, (seq, _) in heads.items()
                if a not in private
            ):
                self.request(peer)  # the asker is ahead of us somewhere: pull back
            await self._record_heads(peer, raw_heads, heads)
            await ms.send([DONE, sent])
        except (StreamClosed, StreamTimeout) as exc:
            log.info("sync with %s ended early: %s", peer.to_base58(), exc)
        except ProtocolError as exc:
            self.guard.reject(peer, "sync request", str(exc))
        finally:
            await _close(stream)

    async def _serve(self, ms: MessageStream, theirs: Heads) -> int:
        """Send, in our log order and in bounded batches, every event the peer lacks."""
        store = self.store
        start = await trio.to_thread.run_sync(store.first_missing_position, theirs)
        if start is None:
            return 0
        after, sent, budget = start - 1, 0, self.config.sync_session_events
        while budget > 0:
            scan = min(budget, self.config.sync_batch_events)
            rows, last = await trio.to_thread.run_sync(store.read_missing, after, theirs, scan)
            if last == after:
                break
            after = last
            for batch in _batches(rows[:budget], self.config.sync_batch_bytes):
                await ms.send([EVENTS, batch])
                sent += len(batch)
                budget -= len(batch)
        self.served += sent
        return sent

    def _wanted(self, want: list[bytes]) -> list[bytes]:
        """The authors an author-limited request covers: the addresses themselves and every job
        chain held here that speaks for or towards one of them."""
        asked = set(want)
        return sorted(asked | set(self.jobs.involving(asked)))

    async def _serve_authors(self, ms: MessageStream, theirs: Heads, authors: list[bytes]) -> int:
        """Send, in our log order, the events of `authors` past the peer's heads."""
        store, after, sent = self.store, 0, 0
        budget = self.config.sync_session_events
        while budget > 0 and authors:
            scan = min(budget, self.config.sync_batch_events)
            rows = await trio.to_thread.run_sync(store.read_authors, after, authors, scan)
            if not rows:
                break
            after = rows[-1][0]
            missing = []
            for _, author, seq, eid, raw in rows:
                their_seq, their_id = theirs.get(author, (0, b""))
                if seq > their_seq or (seq == their_seq and eid != their_id):
                    missing.append(raw)
            for batch in _batches(missing[:budget], self.config.sync_batch_bytes):
                await ms.send([EVENTS, batch])
                sent += len(batch)
                budget -= len(batch)
        self.served += sent
        return sent

    async def _record_heads(self, peer: ID, raw_heads: list[Any], heads: Heads) -> None:
        """Store what this peer has, for `castnet audit` ("complete up to the heads seen from N
        peers"): when its heads changed, at most once per HEADS_RECORD_S per peer."""
        digest, now = keccak256(pack_message(raw_heads)), trio.current_time()
        last = self._heads_recorded.get(peer)
        if last is not None and (last[1] == digest or now - last[0] < HEADS_RECORD_S):
            return
        if len(self._heads_recorded) >= 4096:  # forget the oldest entry: bounded memory
            self._heads_recorded.pop(next(iter(self._heads_recorded)))
        self._heads_recorded[peer] = (now, digest)
        seen_ms = int(time.time() * 1000)
        await trio.to_thread.run_sync(
            self.store.record_peer_heads, peer.to_base58(), heads, seen_ms
        )

    # -- asking ----------------------------------------------------------------------------

    async def sync_from(self, peer: ID, want: list[bytes] | None = None) -> int:
        """Fetch and store every event `peer` has after our heads; the number received. With
        `want`, only those authors' events and the job chains the peer holds that speak for or
        towards them (admission does not apply: we asked for them)."""
        self.sessions += 1
        stream = await self.running.host.new_stream(peer, [SYNC_PROTOCOL])
        ms = MessageStream(stream, self.config.max_frame_bytes, self.config.frame_timeout_s)
        via = peer.to_base58()
        received = broken = stored = 0
        try:
            heads = await trio.to_thread.run_sync(self.store.heads)
            if want is None:
                private = self.jobs.private()
                mine = [(a, h) for a, h in heads.items() if a not in private]
            else:
                covered = set(self._wanted(want))
                mine = [(a, h) for a, h in heads.items() if a in covered]
            items = [[a, h.seq, h.id] for a, h in mine[: self.config.sync_max_heads]]
            hello = [HELLO, VERSION, self.config.network, items]
            await ms.send(hello if want is None else [*hello, list(want)])
            batches_send, batches = trio.open_memory_channel[list[SignedEvent]](2)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._read_batches, ms, batches_send, peer)
                    async for events in batches:
                        if want is not None:
                            for event in events:  # the chains' bindings come first in each
                                self.jobs.learn(event)
                        elif self.admission is not None:  # counted, not penalized: we asked
                            events, _ = self.admission.filter(
                                events, via, trio.current_time(), topic=False
                            )
                        results = await self.ingest.submit(events, via)
                        received += len(events)
                        broken += sum(r.outcome is Outcome.BROKEN_CHAIN for r in results)
                        stored += sum(r.outcome is Outcome.APPENDED for r in results)
            except BaseExceptionGroup as group:
                # the reader's error (a bad signature, a malformed frame) arrives wrapped by the
                # nursery; unwrapped, the session penalizes the peer as gossip would
                only = _single_error(group)
                if only is None:
                    raise
                raise only from None
        finally:
            await _close(stream)
        self.fetched += received
        self.stored += stored
        if received:
            # "new" counts the events gossip had not brought: what sync repaired
            log.info("synced %d events from %s (%d new)", received, via, stored)
        if stored and want is None:
            # tell the others: their next session with us shows them our newer heads (only
            # when we stored something: a session of duplicates must not start a cascade)
            for other in self.running.host.get_connected_peers():
                if other != peer:
                    self.request(other)
        if broken:
            log.warning("%d events from %s did not link to our chains: not stored", broken, via)
        return received

    async def _read_batches(
        self, ms: MessageStream, out: trio.MemorySendChannel[list[SignedEvent]], peer: ID
    ) -> None:
        """Read and verify batches ahead of the appender, so network, CPU and disk overlap."""
        async with out:
            for _ in range(self.config.sync_session_events + 2):  # a frame holds >= 1 event
                fields = await ms.receive()
                kind = fields[0]
                if kind == EVENTS and len(fields) == 2:
                    events = await trio.to_thread.run_sync(
                        verify_batch, fields[1], self.config.sync_batch_events
                    )
                    await out.send(events)
                elif kind == DONE:
                    return
                elif kind == ERROR and len(fields) == 3 and fields[1] == WRONG_NETWORK:
                    self._wrong_network(peer, f"not ours ({fields[2]})")
                    raise WrongNetwork(str(fields[2]))
                else:
                    raise ProtocolError(f"unexpected sync message {kind!r}")

    def _wrong_network(self, peer: ID, theirs: object) -> None:
        name = peer.to_base58()
        if name not in self.wrong_network:
            self.wrong_network.add(name)
            log.warning(
                "peer %s is on network %r, we are on %r: disconnecting",
                name, theirs, self.config.network,
            )  # fmt: skip
        self.guard.ban(peer, "wrong network id")

    # -- scheduling ------------------------------------------------------------------------

    def request(self, peer: ID) -> None:
        """Ask for a session with `peer` soon; coalesces with one in flight."""
        if peer in self._no_sync:
            return
        if peer in self._in_flight:
            self._again.add(peer)
            return
        self._in_flight.add(peer)
        self._requests_send.send_nowait(peer)

    async def run(self, *, workers: int = 4, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(workers):
                nursery.start_soon(self._worker)
            nursery.start_soon(self._periodic)
            task_status.started()

    async def _worker(self) -> None:
        async for peer in self._requests:
            for _ in range(2):  # one rerun when asked again meanwhile
                self._again.discard(peer)
                await self._session(peer)
                if peer not in self._again:
                    break
            self._in_flight.discard(peer)

    async def _session(self, peer: ID) -> None:
        if self.guard.is_banned(peer):
            return
        if _announced_without(self.running, peer, SYNC_PROTOCOL):
            self._not_syncing(peer, "identify does not list it")
            return
        try:
            with trio.fail_after(self.config.frame_timeout_s * 10):
                await self.sync_from(peer)
        except ProtocolError as exc:
            if not isinstance(exc, StreamClosed | StreamTimeout | WrongNetwork):
                self.guard.reject(peer, "sync answer", str(exc))
            else:
                log.info("sync from %s failed: %s", peer.to_base58(), exc)
        except (P2PError, trio.TooSlowError, Exception) as exc:  # the peer went away, mostly
            if not_supported(exc):  # a peer without a log (a worker, a JS peer): ask once
                self._not_syncing(peer, "it refused the protocol")
                return
            log.info("sync from %s failed: %r", peer.to_base58(), exc)

    def _not_syncing(self, peer: ID, why: str) -> None:
        self._no_sync.add(peer)
        log.info("%s does not serve %s (%s); not syncing with it",
                 peer.to_base58(), SYNC_PROTOCOL, why)  # fmt: skip

    def no_sync_peers(self) -> list[str]:
        """Peers found not to speak the sync protocol: never asked again."""
        return sorted(p.to_base58() for p in self._no_sync)

    async def _periodic(self) -> None:
        skipped = 0
        while True:
            await trio.sleep(self.config.sync_interval_s)
            # while gossip is delivering, a periodic session mostly fetches events that are
            # already on their way (and counts them as lost): skip a few rounds, not all
            quiet = trio.current_time() - self.last_gossip() >= self.config.sync_quiet_s
            if not quiet and skipped < self.config.sync_max_skips:
                skipped += 1
                continue
            skipped = 0
            peers = self.running.host.get_connected_peers()
            for peer in _sample(peers, 3):
                self.request(peer)


def _single_error(group: BaseExceptionGroup[BaseException]) -> Exception | None:
    """The one P2PError inside a (possibly nested) exception group, else None."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending and len(leaves) < 2:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    if len(leaves) == 1 and not pending and isinstance(leaves[0], P2PError):
        return leaves[0]
    return None


def not_supported(exc: BaseException) -> bool:
    """Whether a failed stream open means the peer does not speak the protocol at all.

    py-libp2p 0.8.1 raises a fresh MultiselectClientError ("protocols not supported: tried
    [...]") without chaining the ProtocolNotSupportedError behind it, so the message is the only
    sign; a timed-out or broken negotiation says something else and is retried later."""
    seen: BaseException | None = exc
    for _ in range(8):  # the cause chain, bounded
        if seen is None:
            return False
        if isinstance(seen, ProtocolNotSupportedError):
            return True
        if isinstance(seen, MultiselectClientError) and _NOT_SUPPORTED in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _announced_without(running: RunningHost, peer: ID, protocol: str) -> bool:
    """Whether identify told us the peer's protocols and `protocol` is not among them."""
    try:
        protocols = running.host.get_peerstore().get_protocols(peer)
    except Exception:  # unknown peer, or identify has not answered yet
        return False
    return bool(protocols) and protocol not in {str(p) for p in protocols}


def _sample(peers: list[ID], k: int) -> list[ID]:
    return random.sample(peers, min(k, len(peers)))


async def _close(stream: INetStream) -> None:
    with contextlib.suppress(Exception):  # closing a stream the peer reset is fine
        await stream.close()
