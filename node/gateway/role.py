"""The gateway role: segment an input, post a job per segment, pick orchestrators (selection),
quote, pay with tickets, send the segment, verify every result (signature, hashes, pixel claims,
media.verify against the source), log verdicts, retry a failed or late segment elsewhere (up to 3
attempts), and write the HLS ladder in order as segments complete. What every paid segment shares
with inference jobs (ai_jobs) lives in market; this module is the transcoding."""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import trio

from events import kinds as k
from events.crypto import keccak256
from events.envelope import SignedEvent
from media.hls import VodOutput
from media.profiles import Profile, parse_profiles
from media.segmenter import Segment, segment
from media.source import SourceInfo, probe
from media.transcoder import Rendition, TranscodeResult
from node.gateway.checks import check_result
from node.gateway.journal import SegmentJournal
from node.gateway.market import SegmentMarket
from node.gateway.work import GatewayConfig as GatewayConfig
from node.gateway.work import JobReport as JobReport
from node.gateway.work import SegmentOutcome as SegmentOutcome
from node.gateway.work import SegmentWork
from node.protocol import (
    JOB_DONE,
    JOB_PROTOCOL,
    JOB_REQUEST,
    JobSpec,
    estimate_pixels,
    rendition_from_wire,
)
from p2p.errors import ProtocolError

log = logging.getLogger("castnet.gateway")
TRANSCODE_CAPABILITY = "transcode:h264"
# segments of a job cut beyond those holding a scheduler place (one more is cut and waits in the
# segmenter): the next segment is ready when a place frees, and the segmenter (a thread on the
# gateway's cores) does not cut the whole input at once while the first segments' quote, tickets
# and upload wait for those cores. A segment is probed later still, once it has an orchestrator's
# slot (node.gateway.market)
CUT_AHEAD = 1


class GatewayError(Exception):
    """A job could not be completed; the message says which segments and why."""


ProgressFn = Callable[[int, int, SegmentOutcome], None]


class Gateway(SegmentMarket):
    """The gateway's market (node.gateway.market) with transcoding jobs on it."""

    async def transcode_file(
        self,
        source: str | Path,
        out: Path,
        on_progress: ProgressFn | None = None,
        profiles: str | None = None,
        journal: SegmentJournal | None = None,
    ) -> JobReport:
        """Transcode `source` on the network into an HLS tree at `out` (the configured ladder
        unless `profiles` names another); with a `journal`, a job a restart interrupted goes on
        from the segments it had verified."""
        started = time.perf_counter()
        ladder = parse_profiles(profiles or self.config.profiles)
        report = JobReport(out, [])
        output = VodOutput(out)
        cut_failed: list[Exception] = []
        try:
            async with trio.open_nursery() as nursery:
                # the first segment's quote is asked for while the input is segmented
                nursery.start_soon(self.quote_ahead, TRANSCODE_CAPABILITY)
                send, receive = trio.open_memory_channel[tuple[SegmentWork, SegmentOutcome]](0)
                nursery.start_soon(_segment_into, source, ladder, self.config.preset, send,
                                   cut_failed, nursery.cancel_scope)  # fmt: skip
                await self._run_stream(receive, report, output.add, on_progress, journal)
            if cut_failed:  # the input went bad partway: the segments in flight were cancelled
                raise cut_failed[0]
            if not report.segments:
                raise GatewayError(f"{source}: no segments")
            _raise_failed(report)
            await trio.to_thread.run_sync(output.commit)
        finally:
            output.discard()
        report.wall_s = time.perf_counter() - started
        return report

    async def run_works(
        self,
        works: Sequence[SegmentWork],
        report: JobReport,
        write: Callable[[int, Any], None],
        on_progress: ProgressFn | None = None,
        journal: SegmentJournal | None = None,
    ) -> None:
        """Run every segment's work at once (each waits for a free orchestrator) and `write`
        results in order, in a thread, as they complete; GatewayError if any segment failed.
        `report.segments` holds an outcome per work, in the same order."""
        send, receive = trio.open_memory_channel[tuple[SegmentWork, SegmentOutcome]](len(works))
        async with send:
            for pair in zip(works, report.segments, strict=True):
                send.send_nowait(pair)
        await self._run_stream(receive, report, write, on_progress, journal, listed=True)
        _raise_failed(report)

    async def _run_stream(
        self,
        arrivals: trio.MemoryReceiveChannel[tuple[SegmentWork, SegmentOutcome]],
        report: JobReport,
        write: Callable[[int, Any], None],
        on_progress: ProgressFn | None = None,
        journal: SegmentJournal | None = None,
        listed: bool = False,
    ) -> None:
        """Start each segment's work as it arrives (a segmenter still cutting the input sends
        them one by one; `listed`: the report holds their outcomes already) and `write` results
        in order, in a thread, as they complete (failed segments stay in the report). A segment
        that passed only the cheap checks is written once the job's other segments are in: if
        its orchestrator failed a check meanwhile, it is redone elsewhere first. `on_progress`
        gets the segments known so far as the total (all of them by the last call)."""
        works: list[SegmentWork] = []
        done: dict[int, SegmentOutcome] = {}
        written = count = 0
        results_send, results_receive = trio.open_memory_channel[SegmentOutcome](math.inf)
        unplaced: deque[trio.Event] = deque()  # started segments' "placed" events, in order

        async def feed(nursery: trio.Nursery) -> None:
            async with results_send, arrivals:
                async for work, outcome in arrivals:
                    works.append(work)
                    if not listed:
                        report.segments.append(outcome)
                    placed = trio.Event()
                    unplaced.append(placed)
                    nursery.start_soon(self._run_one, work, outcome, report,
                                       results_send.clone(), journal, placed)  # fmt: skip
                    # take the next segment from the segmenter only while fewer than CUT_AHEAD
                    # started ones wait for a place (backpressure on the cutting thread)
                    while unplaced and (unplaced[0].is_set() or len(unplaced) >= CUT_AHEAD):
                        await unplaced.popleft().wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed, nursery)
            async for outcome in results_receive:
                count += 1
                if outcome.result is not None:
                    done[outcome.seq] = outcome
                written = await _write_in_order(works, done, written, write, final=False)
                if on_progress is not None:
                    on_progress(count, len(works), outcome)
        await self._redo_unverified(works, report, journal)
        await self.writer.flush_summaries()  # the job's verdicts, network-wide
        await _write_in_order(works, done, written, write, final=True)

    async def _redo_unverified(
        self, works: Sequence[SegmentWork], report: JobReport, journal: SegmentJournal | None
    ) -> None:
        """Redo, on other orchestrators, the segments that passed only the cheap checks at an
        orchestrator that later failed a check."""
        policy = self.verify_policy
        redo = [(w, o) for w, o in zip(works, report.segments, strict=True)
                if o.result is not None and not o.full_check
                and policy.distrusted(o.orchestrator)]  # fmt: skip
        if not redo:
            return
        log.warning("redoing %d segments that passed only the cheap checks at orchestrators "
                    "that failed a check since", len(redo))  # fmt: skip
        async with trio.open_nursery() as nursery:
            for work, outcome in redo:
                nursery.start_soon(self._redo_one, work, outcome, report, journal)

    async def _redo_one(
        self,
        work: SegmentWork,
        outcome: SegmentOutcome,
        report: JobReport,
        journal: SegmentJournal | None,
    ) -> None:
        cheat = outcome.orchestrator
        outcome.errors.append(f"0x{cheat.hex()[:8]} failed a check after this segment passed "
                              "only the cheap checks: redone")  # fmt: skip
        outcome.result, outcome.orchestrator, outcome.attempts = None, b"", 0
        outcome.fee_wei, outcome.full_check = Fraction(0), True
        if journal is not None:
            await trio.to_thread.run_sync(journal.forget, work.seq)
        await self.run_work(work, outcome, report, journal=journal, avoid=frozenset({cheat}))

    async def _run_one(
        self,
        work: SegmentWork,
        outcome: SegmentOutcome,
        report: JobReport,
        results: trio.MemorySendChannel[SegmentOutcome],
        journal: SegmentJournal | None,
        placed: trio.Event | None = None,
    ) -> None:
        async with results:
            try:
                await self.run_work(work, outcome, report, journal=journal, placed=placed)
            finally:
                await results.send(outcome)

    async def run_segment(
        self,
        seg: Segment,
        ladder: tuple[Profile, ...],
        outcome: SegmentOutcome,
        report: JobReport,
        prefer: bytes | None = None,
        timeout_s: float | None = None,
    ) -> SegmentOutcome:
        """Quote, pay, send, verify and retry one segment (never raises: errors land in
        `outcome`); `prefer` is tried first when it has a free slot (a live session's
        orchestrator), `timeout_s` bounds each attempt (default: the config's job timeout)."""
        work = _Transcode(seg, ladder, self.config.preset)
        return await self.run_work(work, outcome, report, prefer, timeout_s)


def _raise_failed(report: JobReport) -> None:
    if report.failed:
        failed = [f"{s.seq}: {'; '.join(s.errors)}" for s in report.segments if not s.result]
        raise GatewayError(f"{report.failed} of {len(report.segments)} segments failed: "
                           + " | ".join(failed))  # fmt: skip


async def _segment_into(
    source: str | Path,
    ladder: tuple[Profile, ...],
    preset: str,
    send: trio.MemorySendChannel[tuple[SegmentWork, SegmentOutcome]],
    failed: list[Exception],
    job: trio.CancelScope,
) -> None:
    """Cut `source` in a thread and send each segment's work as soon as it is cut; an input
    that does not cut (or stops cutting partway) lands in `failed` and cancels the `job`."""

    def cut() -> None:
        for seg in segment(source):
            work = _Transcode(seg, ladder, preset)
            trio.from_thread.run(send.send, (work, SegmentOutcome(seg.seq)))

    async with send:
        try:
            await trio.to_thread.run_sync(cut)
        except Exception as exc:  # raised by the caller, outside the job's nursery
            failed.append(exc)
            job.cancel()


async def _write_in_order(
    works: Sequence[SegmentWork],
    done: dict[int, SegmentOutcome],
    written: int,
    write: Callable[[int, Any], None],
    final: bool,
) -> int:
    """Write the completed segments that follow the `written` first ones, in order, stopping at
    a gap and (until `final`) at a segment that passed only the cheap checks; returns how many
    are written now."""
    while written < len(works) and works[written].seq in done:
        outcome = done[works[written].seq]
        if not final and not outcome.full_check:
            break
        if outcome.result is not None:  # a redo that failed leaves none (the job then fails)
            await trio.to_thread.run_sync(write, outcome.seq, outcome.result)
        written += 1
    return written


@dataclass(slots=True)
class _Transcode:
    """One segment's ladder as market work (node.gateway.market.SegmentWork)."""

    seg: Segment
    ladder: tuple[Profile, ...]
    preset: str
    info: SourceInfo | None = None
    pixels: int = 0
    capability: str = TRANSCODE_CAPABILITY
    warm: str = ""
    protocol: str = JOB_PROTOCOL
    request_kind: int = JOB_REQUEST
    done_kind: int = JOB_DONE
    seq: int = field(init=False)
    data: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.seq, self.data = self.seg.seq, self.seg.data

    async def prepare(self) -> k.JobPosted:
        info = self.info = await trio.to_thread.run_sync(probe, self.seg.data)
        self.pixels = estimate_pixels(info.width, info.height, info.rate, info.duration or 0.0,
                                      self.ladder)  # fmt: skip
        return k.JobPosted("transcode", keccak256(self.seg.data), len(self.seg.data),
                           round(float(self.seg.duration) * 1000),
                           tuple(p.name for p in self.ladder), 0, 1, ())  # fmt: skip

    def spec_wire(self, job_id: bytes) -> list[Any]:
        profiles = ",".join(p.name for p in self.ladder)  # a Profile's name is its spec text
        return JobSpec(job_id, profiles, self.preset).to_wire()

    def outputs(self, metas: list[Any], blobs: list[bytes]) -> list[Rendition]:
        if not metas:
            raise ProtocolError("a transcode result holds at least one rendition")
        return [rendition_from_wire(m, d) for m, d in zip(metas, blobs, strict=True)]

    def check(
        self, result: SignedEvent, orch: bytes, job_id: bytes, outputs: list[Rendition]
    ) -> list[str]:
        assert self.info is not None
        return check_result(result, orch, job_id, outputs, self.seg, self.info, self.ladder)

    def check_cheap(
        self, result: SignedEvent, orch: bytes, job_id: bytes, outputs: list[Rendition]
    ) -> list[str]:
        assert self.info is not None
        return check_result(result, orch, job_id, outputs, self.seg, self.info, self.ladder,
                            full=False)  # fmt: skip

    def accept(self, outputs: list[Rendition]) -> TranscodeResult:
        first = outputs[0]
        return TranscodeResult(tuple(outputs), 0, 0, first.frame_count, self.seg.start_pts,
                               first.duration, 0.0)  # fmt: skip
