"""How far each segment of a file job got, kept in the job's folder so that a restarted gateway
resumes the job instead of starting over: the id of every segment's JobPosted (a segment is
posted once), and the outputs of every verified segment with the orchestrator's signed result
(a verified segment is neither sent, transcoded nor paid for again). The gateway's log stays the
truth: a kept segment counts only when the log holds its accepted verdict, or holds its
assignment so the verdict can still be recorded (node.gateway.market decides). A segment whose
attempt was open at the restart is not posted again while its orchestrator still has its result
(it took the tickets): the result is fetched on `/castnet/result/1` and checked.

Files, one per segment, each written to a temp file, fsynced and renamed:
`<seq>.posted` (the 32-byte JobPosted id) and `<seq>.kept` (msgpack
`[2, job_id, result_raw, latency_ms, [output metadata...], [output bytes...], full_check]`, the
outputs as they came off the wire; `full_check` false when the segment passed only the cheap checks,
so that after a restart it is still redone if its orchestrator later fails a check. Format 1 files,
without it, are read as cheap-checked)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import trio
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.id import ID

from events import kinds as k
from events import state as job_status
from events.envelope import SignedEvent, decode, decode_verified
from events.errors import EventError
from events.state import ASSIGNED, CLAIMED, POSTED, REJECTED, RESULTED, VERIFIED, OfferState
from node.gateway.answers import read_result
from node.gateway.payment import close
from node.protocol import RESULT_PROTOCOL, RESULT_REQUEST, VERSION, Refused
from node.view import NodeView
from p2p.errors import P2PError, ProtocolError
from p2p.framing import MessageStream
from p2p.node import P2PNode

if TYPE_CHECKING:
    from node.gateway.selection import Selector
    from node.gateway.work import GatewayConfig, SegmentOutcome, SegmentWork

log = logging.getLogger("castnet.gateway")
FORMAT = 2


@dataclass(frozen=True, slots=True)
class KeptSegment:
    """A verified segment's outputs, kept before its verdict was logged."""

    job_id: bytes
    result: bytes  # the orchestrator's signed JobResult, as received
    latency_ms: int
    metas: list[Any]
    blobs: list[bytes]
    full_check: bool = True  # False: it passed only the cheap checks (verify "sample")


class SegmentJournal:
    """A job's segment files under `folder`; blocking (call in a thread)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def posted(self, seq: int) -> bytes | None:
        raw = self._read(seq, "posted")
        return raw if raw is not None and len(raw) == 32 else None

    def record_posted(self, seq: int, job_id: bytes) -> None:
        self._write(seq, "posted", job_id)

    def kept(self, seq: int) -> KeptSegment | None:
        """The kept outputs of segment `seq`; None when there are none or the file is damaged
        (the segment then runs again)."""
        raw = self._read(seq, "kept")
        if raw is None:
            return None
        try:
            items = msgpack.unpackb(raw)
            if not isinstance(items, list) or not items or items[0] not in (1, FORMAT):
                raise ValueError("unknown format")
            full = items[6] if items[0] == FORMAT and len(items) == 7 else False
            version, job_id, result, latency_ms, metas, blobs = items[:6]
            if len(items) != (7 if version == FORMAT else 6) or type(full) is not bool:
                raise ValueError("unknown format")
            if not (type(job_id) is bytes and type(result) is bytes):
                raise ValueError("unknown format")
            if not (isinstance(metas, list) and isinstance(blobs, list)):
                raise ValueError("outputs are not lists")
            if len(metas) != len(blobs) or not all(type(b) is bytes for b in blobs):
                raise ValueError("outputs do not match their metadata")
            return KeptSegment(job_id, result, int(latency_ms), metas, blobs, full)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            log.warning("ignoring damaged kept segment %s: %s", self._path(seq, "kept"), exc)
            return None

    def keep(self, seq: int, kept: KeptSegment) -> None:
        data = msgpack.packb([FORMAT, kept.job_id, kept.result, kept.latency_ms, kept.metas,
                              kept.blobs, kept.full_check])  # fmt: skip
        self._write(seq, "kept", data)

    def forget(self, seq: int) -> None:
        """Forget segment `seq` (it is redone: neither its posting nor its outputs count)."""
        for what in ("kept", "posted"):
            self._path(seq, what).unlink(missing_ok=True)

    def clear(self) -> None:
        """Forget every segment (the job finished: its output holds what is worth keeping)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def _path(self, seq: int, what: str) -> Path:
        return self.folder / f"{seq:05d}.{what}"

    def _read(self, seq: int, what: str) -> bytes | None:
        try:
            return self._path(seq, what).read_bytes()
        except FileNotFoundError:
            return None

    def _write(self, seq: int, what: str, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(seq, what)
        temp = path.with_name(f".{path.name}.tmp")
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself survives a power cut
        finally:
            os.close(fd)


class JournalResume:
    """What a gateway's market does with a job's journal after a restart (mixed into
    node.gateway.market.SegmentMarket, whose node, view, address and verdicts it uses)."""

    node: P2PNode
    view: NodeView
    address: bytes
    config: GatewayConfig
    selector: Selector

    _verdict: Callable[..., Awaitable[None]]  # (job_id, orch, accepted, reason, latency, result)
    # (work, orch, job_id, result, outputs) -> (full check?, problems)
    _problems: Callable[..., Awaitable[tuple[bool, list[str]]]]
    _dial_offer: Callable[[OfferState], Awaitable[ID]]
    _stream: Callable[[object, float], MessageStream]

    async def _resume(
        self,
        work: SegmentWork,
        posting: Callable[[], Awaitable[k.JobPosted]],
        outcome: SegmentOutcome,
        journal: SegmentJournal,
    ) -> SignedEvent | None:
        """What a run before a restart left of this segment: its verified outputs, or the
        result of an attempt open at the restart, fetched from its orchestrator (then `outcome`
        gets them), or its JobPosted when no attempt was open (returned, to assign again); None
        when it must be posted anew. `posting()` gives what the segment would post now (it
        probes the segment: called only when the journal holds a posting to compare)."""
        kept = await trio.to_thread.run_sync(journal.kept, work.seq)
        posted_id = kept.job_id if kept is not None else None
        posted_id = posted_id or await trio.to_thread.run_sync(journal.posted, work.seq)
        if posted_id is None:
            return None
        raw = await trio.to_thread.run_sync(self.node.store.get, posted_id)
        state = await self.view.refresh()
        job = state.jobs.get(posted_id)
        if raw is None or job is None or job.poster != self.address:
            return None
        posted = decode(raw)
        if not same_posting(k.read_body(posted), await posting()):
            log.warning("segment %d differs from the one posted before the restart", work.seq)
            return None
        if kept is not None and await self._reuse(work, kept, job, outcome):
            return None
        if job.status in (POSTED, job_status.FAILED, REJECTED):
            return posted
        if job.status == VERIFIED:
            log.warning("segment %d was verified before the restart, but its kept outputs are "
                        "gone: it runs again", work.seq)  # fmt: skip
            return None
        # an attempt was open when the gateway stopped (assigned, claimed: computing or staged
        # there, or resulted): the orchestrator took its tickets and charges its fee, so its
        # result is fetched from it; posted anew only when it has none for us
        if job.status in (ASSIGNED, CLAIMED, RESULTED):
            offer = state.offers.get(job.assignee)
            await self._fetch_open(work, posted_id, job, offer, outcome, journal)
        return None

    async def _fetch_open(
        self,
        work: SegmentWork,
        job_id: bytes,
        job: Any,
        offer: OfferState | None,
        outcome: SegmentOutcome,
        journal: SegmentJournal,
    ) -> None:
        """The result of a job open at the restart, fetched from its orchestrator (node.
        orchestrator.results), checked like any result and used (`outcome` gets it); nothing
        when it has none for us (it never got the job, or has restarted itself) or the result
        fails its checks (then the job gets a rejecting verdict): the segment is posted anew."""
        orch, who = job.assignee, "0x" + job.assignee.hex()[:8]
        started = time.monotonic()
        try:
            if offer is None:
                raise P2PError("no offer of it is known")
            with trio.fail_after(self.config.job_timeout_s):
                peer = await self._dial_offer(offer)
                self.node.note_job_peer(orch, peer)
                stream = await self.node.running.host.new_stream(peer, [RESULT_PROTOCOL])
                try:
                    ms = self._stream(stream, self.config.job_timeout_s)
                    await ms.send([RESULT_REQUEST, VERSION, job_id])
                    result, metas, blobs = await read_result(self.node, ms, work.done_kind, peer)
                finally:
                    await close(stream)
            outputs = work.outputs(metas, blobs)
        except (Refused, P2PError, ProtocolError, EventError, BaseLibp2pError, OSError,
                trio.TooSlowError) as exc:  # fmt: skip
            log.info("segment %d: its job %s was %s at the restart and %s has no result of it "
                     "for us (%s); posting it again", work.seq, job_id.hex()[:16], job.status,
                     who, str(exc) or type(exc).__name__)  # fmt: skip
            return
        latency = time.monotonic() - started
        full, problems = await self._problems(work, orch, job_id, result, outputs)
        if problems:
            reason = f"{who}: {'; '.join(problems)}"
            outcome.errors.append(reason)
            log.warning("segment %d: the result fetched after the restart failed: %s", work.seq,
                        reason)  # fmt: skip
            self.selector.failed(orch, time.monotonic())
            await self._verdict(job_id, orch, False, reason[:500], latency, result)
            return
        await record(journal.keep, work.seq, KeptSegment(job_id, result.raw, round(latency * 1000),
                                                         metas, blobs, full))  # fmt: skip
        await self._verdict(job_id, orch, True, "ok", latency, result)
        outcome.orchestrator, outcome.latency_s, outcome.full_check = orch, latency, full
        outcome.fee_wei = Fraction(job.price_per_unit, job.pixels_per_unit) * _result_pixels(result)
        outcome.result = work.accept(outputs)
        log.info("segment %d: its job %s was %s at the restart; its result fetched from %s",
                 work.seq, job_id.hex()[:16], job.status, who)  # fmt: skip

    async def _reuse(
        self, work: SegmentWork, kept: KeptSegment, job: Any, outcome: SegmentOutcome
    ) -> bool:
        """Take a kept segment's outputs when the log holds its accepted verdict, or when its
        attempt is still open (the outputs passed the checks before they were kept: the verdict
        is recorded now)."""
        try:
            result = decode_verified(kept.result)
            outputs = work.outputs(kept.metas, kept.blobs)
        except (EventError, ProtocolError) as exc:
            log.warning("segment %d: kept outputs unusable: %s", work.seq, exc)
            return False
        orch = self.node.jobs.principal_of(result.author) or result.author  # its job chain's
        if job.assignee != orch:
            return False
        if job.status in (ASSIGNED, RESULTED):
            await self._verdict(kept.job_id, orch, True, "ok", kept.latency_ms / 1000, result)
        elif job.status != VERIFIED:
            return False
        outcome.orchestrator, outcome.latency_s = orch, kept.latency_ms / 1000
        outcome.full_check = kept.full_check  # still redone if its orchestrator fails a check
        outcome.fee_wei = Fraction(job.price_per_unit, job.pixels_per_unit) * _result_pixels(result)
        outcome.result = work.accept(outputs)
        log.info("segment %d: verified before the restart; its kept outputs are used",
                 work.seq)  # fmt: skip
        return True


def same_posting(before: Any, now: k.JobPosted) -> bool:
    """The same segment of the same work (the price cap may have changed since)."""
    if not isinstance(before, k.JobPosted):
        return False
    what = (before.pipeline, before.input_hash, before.input_bytes, before.profiles)
    return what == (now.pipeline, now.input_hash, now.input_bytes, now.profiles)


async def record(write: Any, seq: int, item: Any) -> None:
    """Record in the job's journal; a failure (a full disk) costs only the resume of this
    segment, so it is logged, not raised (it is not the orchestrator's fault)."""
    try:
        await trio.to_thread.run_sync(write, seq, item)
    except OSError as exc:
        log.warning("segment %d: cannot record it for a restart: %s", seq, exc)


def _result_pixels(result: SignedEvent) -> int:
    body = k.read_body(result)
    assert isinstance(body, k.JobResult)
    return body.output_pixels
