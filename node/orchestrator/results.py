"""The results of the segments this orchestrator computed, kept a while for the gateway that sent
them. A gateway restarted mid-job never got the results of the segments it had in flight, though
this node took their tickets and charged their fees; on `/castnet/result/1` it fetches such a
job's signed result and outputs by job id instead of posting the segment again (which would pay
for it twice). Only the libp2p peer that sent a job may fetch it (Noise authenticates the peer;
a gateway keeps its peer key across restarts). A job still being computed is waited for.

Kept in memory, at most KEEP_S seconds and KEEP_BYTES of outputs (the oldest go first); a
result is kept whether or not its first delivery seemed to succeed, since a gateway may die
after the bytes left here and before it stored them."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.network.stream.net_stream import INetStream

from node.orchestrator.streams import answering, peer_name
from node.protocol import BAD_REQUEST, RESULT_REQUEST, UNKNOWN, VERSION, Refused
from p2p.framing import MessageStream

log = logging.getLogger("castnet.orchestrator")
KEEP_S = 600.0
KEEP_BYTES = 256 * 1024 * 1024
WAIT_S = 120.0  # how long a fetch waits for a job still computing


@dataclass(slots=True)
class _Kept:
    peer: Any  # the libp2p peer ID that sent the job
    reply: list[Any]
    blobs: list[bytes]
    at: float
    size: int


class KeptResults:
    """Jobs being computed and results kept, by job id; one trio thread (no locks)."""

    def __init__(
        self,
        keep_s: float = KEEP_S,
        keep_bytes: int = KEEP_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keep_s, self.keep_bytes, self._clock = keep_s, keep_bytes, clock
        self._done: OrderedDict[bytes, _Kept] = OrderedDict()
        self._running: dict[bytes, tuple[Any, trio.Event]] = {}
        self.bytes = 0
        self.fetched = 0  # results handed out a second time

    def started(self, job_id: bytes, peer: Any) -> trio.Event:
        """`peer` sent job `job_id` (again, perhaps: a retry replaces the run before it); its
        result comes with `finished` or never (`failed`), each given the token returned here."""
        token = trio.Event()
        self._running[job_id] = (peer, token)
        return token

    def finished(
        self, job_id: bytes, token: trio.Event, reply: list[Any], blobs: list[bytes]
    ) -> None:
        if not self._ends(job_id, token):
            return
        peer = self._running.pop(job_id)[0]
        size = sum(len(b) for b in blobs)
        if size <= self.keep_bytes:
            self._forget(job_id)
            self._done[job_id] = _Kept(peer, reply, blobs, self._clock(), size)
            self.bytes += size
            self.expire()
        token.set()

    def failed(self, job_id: bytes, token: trio.Event) -> None:
        """The run of `token` ended without a result (a no-op once it finished)."""
        if self._ends(job_id, token):
            del self._running[job_id]
        token.set()

    def _ends(self, job_id: bytes, token: trio.Event) -> bool:
        running = self._running.get(job_id)
        return running is not None and running[1] is token

    async def fetch(
        self, job_id: bytes, peer: Any, wait_s: float = WAIT_S
    ) -> tuple[list[Any], list[bytes]]:
        """The reply and outputs of `job_id` as first sent, for the peer that sent the job,
        waiting up to `wait_s` for one still computing; `Refused(UNKNOWN)` otherwise."""
        running = self._running.get(job_id)
        if running is not None and running[0] == peer:
            with trio.move_on_after(wait_s):
                await running[1].wait()
        self.expire()
        kept = self._done.get(job_id)
        if kept is None or kept.peer != peer:
            still = job_id in self._running
            raise Refused(UNKNOWN, f"no result kept for job {job_id.hex()[:16]}"
                                   + (" (still computing)" if still else ""))  # fmt: skip
        self.fetched += 1
        return kept.reply, kept.blobs

    def expire(self) -> None:
        """Drop the results past KEEP_S (or beyond KEEP_BYTES, oldest first)."""
        oldest = self._clock() - self.keep_s
        while self._done:
            job_id, kept = next(iter(self._done.items()))
            if kept.at >= oldest and self.bytes <= self.keep_bytes:
                break
            self._forget(job_id)

    def _forget(self, job_id: bytes) -> None:
        kept = self._done.pop(job_id, None)
        if kept is not None:
            self.bytes -= kept.size

    async def serve(self, stream: INetStream, max_frame_bytes: int, timeout_s: float) -> None:
        """A `/castnet/result/1` request: the job's reply and outputs as first sent, after the
        job finishes if it is running, or a refusal."""
        ms = MessageStream(stream, max_frame_bytes, timeout_s)
        async with answering(stream, ms, "result request"):
            _, version, job_id = await ms.expect(RESULT_REQUEST, 3)
            if version != VERSION or type(job_id) is not bytes or len(job_id) != 32:
                raise Refused(BAD_REQUEST, "expected [RESULT_REQUEST, version, 32-byte job id]")
            reply, blobs = await self.fetch(job_id, stream.muxed_conn.peer_id)
            await ms.send(reply)
            for blob in blobs:
                await ms.send_blob(blob)
            log.info("result of job %s sent again to %s", job_id.hex()[:16], peer_name(stream))
