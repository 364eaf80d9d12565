"""Remote workers of an orchestrator: the `/castnet/worker/1` protocol and the orchestrator's
`WorkerPool`.

A worker (`castnet worker`, often on a GPU machine) dials the orchestrator and opens a control
stream on `WORKER_PROTOCOL`: `[REGISTER, version, capabilities, capacity]`, answered with
`[ACCEPTED, heartbeat_s]` or `[REFUSED, code, reason]`; then heartbeats both ways keep the
registration alive. For each segment the orchestrator opens a stream on `TASK_PROTOCOL` to the
worker: `[TASK, version, profiles, preset]` + the segment as a hash-checked blob, answered with
`[TASK_DONE, [rendition meta...], source facts]` + one blob per rendition, or `[REFUSED, ...]`.
Only peer ids listed in `orchestrator.workers` may register, unless `allow_any_worker`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import trio
from libp2p.network.stream.net_stream import INetStream
from libp2p.peer.id import ID

from media.transcoder import TranscodeResult
from node.protocol import REFUSED, Refused, fraction_wire, rendition_from_wire
from p2p.errors import P2PError, ProtocolError
from p2p.framing import MessageStream
from p2p.node import P2PNode

log = logging.getLogger("castnet.workers")

WORKER_PROTOCOL = "/castnet/worker/1"
TASK_PROTOCOL = "/castnet/worker/1/task"
WORKER_VERSION = 1
REGISTER, ACCEPTED, HEARTBEAT, TASK, TASK_DONE = 1, 2, 3, 4, 5
HEARTBEAT_S = 2.0
MAX_CAPABILITIES = 64
MAX_CAPACITY = 256
# refusal codes of this protocol (the worker exits on NOT_ALLOWED; retries the others)
NOT_ALLOWED = "not-allowed"
BAD_REGISTRATION = "bad-registration"
WORKER_BUSY = "busy"
WORKER_BAD_TASK = "bad-task"
WORKER_FAILED = "failed"


class WorkerFailed(Exception):
    """A worker did not return a usable result for a segment (refused, vanished, sent garbage)."""


@dataclass(slots=True)
class AttachedWorker:
    peer_id: str
    peer: ID
    capabilities: tuple[str, ...]
    capacity: int
    active: int = 0
    served: int = 0
    failed: int = 0

    @property
    def free(self) -> bool:
        return self.active < self.capacity


def source_facts(result: TranscodeResult) -> list[Any]:
    return [result.source_width, result.source_height, result.source_frames, result.start_pts,
            fraction_wire(result.duration), round(result.wall_seconds * 1e6)]  # fmt: skip


def check_registration(fields: list[Any]) -> tuple[tuple[str, ...], int]:
    """Capabilities and capacity of a REGISTER message, or ProtocolError."""
    if len(fields) != 4 or fields[0] != REGISTER or fields[1] != WORKER_VERSION:
        raise ProtocolError(f"expected [REGISTER, {WORKER_VERSION}, capabilities, capacity]")
    caps, capacity = fields[2], fields[3]
    if (
        not isinstance(caps, list)
        or len(caps) > MAX_CAPABILITIES
        or not all(type(c) is str and 0 < len(c) <= 64 for c in caps)
    ):
        raise ProtocolError("capabilities must be a list of at most 64 short strings")
    if not any(c.startswith("transcode:") for c in caps):
        raise ProtocolError("the worker announces no transcode capability")
    if type(capacity) is not int or not 1 <= capacity <= MAX_CAPACITY:
        raise ProtocolError(f"capacity must be an int in 1..{MAX_CAPACITY}")
    return tuple(caps), capacity


class WorkerPool:
    """The workers attached to one orchestrator; `handle_register` is the stream handler of
    `WORKER_PROTOCOL`, `acquire`/`transcode`/`release` run a segment on one of them."""

    def __init__(
        self,
        node: P2PNode,
        allowed: Sequence[str] = (),
        allow_any: bool = False,
        task_timeout_s: float = 120.0,
    ) -> None:
        self.node = node
        self.allowed = frozenset(allowed)
        self.allow_any = allow_any
        self.task_timeout_s = task_timeout_s
        self.workers: dict[str, AttachedWorker] = {}
        self.refused = 0

    # -- registration ----------------------------------------------------------------------

    def admits(self, peer_id: str) -> str | None:
        """None when `peer_id` may register, else why not."""
        if self.allow_any or peer_id in self.allowed:
            return None
        if not self.allowed:
            return ("this orchestrator accepts no workers (set orchestrator.workers = "
                    '["<peer id>"] or orchestrator.allow_any_worker = true)')  # fmt: skip
        return f"peer {peer_id} is not in this orchestrator's orchestrator.workers"

    async def handle_register(self, stream: INetStream) -> None:
        cfg = self.node.config
        ms = MessageStream(stream, cfg.max_frame_bytes, HEARTBEAT_S * 5)
        peer = stream.muxed_conn.peer_id
        name = peer.to_base58()
        worker: AttachedWorker | None = None
        try:
            fields = await ms.receive()
            why = self.admits(name)
            if why is not None:
                raise Refused(NOT_ALLOWED, why)
            try:
                caps, capacity = check_registration(fields)
            except ProtocolError as exc:
                raise Refused(BAD_REGISTRATION, str(exc)) from None
            if name in self.workers:
                raise Refused(BAD_REGISTRATION, f"worker {name} is already registered")
            worker = AttachedWorker(name, peer, caps, capacity)
            self.workers[name] = worker
            await ms.send([ACCEPTED, HEARTBEAT_S])
            log.warning("worker %s attached (%s, capacity %d)", name, ", ".join(caps), capacity)
            while True:  # heartbeats until the worker or its connection goes away
                beat = await ms.receive()
                if beat[0] != HEARTBEAT:
                    raise ProtocolError(f"expected a heartbeat, got message {beat[0]}")
                await ms.send([HEARTBEAT, worker.active])
        except Refused as exc:
            self.refused += 1
            log.warning("worker %s refused: %s", name, exc.reason)
            with contextlib.suppress(P2PError):
                await ms.send([REFUSED, exc.code, exc.reason[:2000]])
        except P2PError as exc:
            if worker is not None:
                log.warning("worker %s detached: %s", name, exc)
        finally:
            if worker is not None and self.workers.get(name) is worker:
                del self.workers[name]
            with contextlib.suppress(Exception):  # the peer may have reset it
                await stream.close()

    # -- work ------------------------------------------------------------------------------

    def acquire(self) -> AttachedWorker | None:
        """The least loaded free worker, its slot taken; `release` it after use."""
        free = [w for w in self.workers.values() if w.free]
        if not free:
            return None
        worker = min(free, key=lambda w: (w.active / w.capacity, w.served))
        worker.active += 1
        return worker

    def release(self, worker: AttachedWorker) -> None:
        worker.active = max(0, worker.active - 1)

    async def transcode(
        self, worker: AttachedWorker, segment: bytes, profiles: str, preset: str, rungs: int
    ) -> TranscodeResult:
        """Run one segment on `worker`; WorkerFailed for anything but a well-formed result of
        1..`rungs` renditions."""
        cfg = self.node.config
        try:
            with trio.fail_after(self.task_timeout_s):
                stream = await self.node.running.host.new_stream(worker.peer, [TASK_PROTOCOL])
                try:
                    ms = MessageStream(stream, cfg.max_frame_bytes, self.task_timeout_s)
                    await ms.send([TASK, WORKER_VERSION, profiles, preset])
                    await ms.send_blob(segment)
                    reply = await ms.receive()
                    if reply[0] == REFUSED and len(reply) == 3:
                        raise WorkerFailed(f"worker refused the segment: {reply[1]}: {reply[2]}")
                    if reply[0] != TASK_DONE or len(reply) != 3 or not isinstance(reply[1], list):
                        raise ProtocolError("expected [TASK_DONE, renditions, source]")
                    metas, facts = reply[1], reply[2]
                    if not 1 <= len(metas) <= rungs:
                        raise ProtocolError(f"{len(metas)} renditions for a {rungs}-rung ladder")
                    renditions = []
                    for meta in metas:
                        data = await ms.receive_blob(cfg.max_blob_bytes)
                        renditions.append(rendition_from_wire(meta, data))
                finally:
                    with contextlib.suppress(Exception):
                        await stream.close()
            result = _result(tuple(renditions), facts)
        except WorkerFailed:
            worker.failed += 1
            raise
        except Exception as exc:  # vanished, reset, timed out (TooSlowError), sent garbage
            worker.failed += 1
            raise WorkerFailed(f"worker {worker.peer_id} failed: {exc!r}") from None
        worker.served += 1
        return result

    def summary(self) -> list[dict[str, Any]]:
        return [{"peer_id": w.peer_id, "capabilities": list(w.capabilities),
                 "capacity": w.capacity, "active": w.active, "served": w.served,
                 "failed": w.failed} for w in self.workers.values()]  # fmt: skip


def _result(renditions: tuple[Any, ...], facts: Any) -> TranscodeResult:
    if not isinstance(facts, list) or len(facts) != 6:
        raise ProtocolError("source facts are a list of 6 fields")
    ints = [facts[i] for i in (0, 1, 2, 3, 5)]
    if not all(type(v) is int and v >= 0 for v in ints):
        raise ProtocolError("malformed source facts")
    duration = facts[4]
    if not isinstance(duration, list) or len(duration) != 2:
        raise ProtocolError("source duration is [numerator, denominator]")
    num, den = (int.from_bytes(b, "big") if type(b) is bytes and len(b) == 32 else -1
                for b in duration)  # fmt: skip
    if num < 0 or den <= 0:
        raise ProtocolError("malformed source duration")
    return TranscodeResult(renditions, ints[0], ints[1], ints[2], ints[3], Fraction(num, den),
                           ints[4] / 1e6)  # fmt: skip
