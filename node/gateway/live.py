"""Live mode of the gateway: ingest a stream URL and publish a live HLS playlist.

A live stream is a sequence of segment jobs on a session held with one orchestrator (DESIGN): the
media segmenter reads the URL in a thread and yields each segment as it completes; every segment
goes through `Gateway.run_segment` (quote, pay, send, verify, retry elsewhere) preferring the
orchestrator that served the previous one, and the session moves to the next best on an error or
when a segment comes back slower than `latency_factor` times its duration. Verified segments are
published in order into a sliding-window `LiveOutput`; a segment that failed every attempt is
skipped (the next one opens with EXT-X-DISCONTINUITY) rather than stalling the stream. When the
input ends, or `stop()` is called, in-flight segments finish and the playlists get EXT-X-ENDLIST.

With `ai` (live_ai.LiveAi) every segment is an inference job instead of a ladder: one rendition
named after the pipeline, with the segment's audio, on orchestrators that keep up (live_ai). Each
published segment's added latency (cut from the input -> listed in the playlist) is reported.
"""

from __future__ import annotations

import functools
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from media.errors import MediaError
from media.hls import LiveOutput
from media.profiles import parse_profiles
from media.segmenter import Segment, segment
from media.transcoder import TranscodeResult
from node.gateway.live_ai import (
    Demand,
    KeepUpSelector,
    LiveAi,
    LiveAiSegment,
    install_selector,
)
from node.gateway.role import Gateway, JobReport, SegmentOutcome
from node.gateway.work import LIVE_SCHEMES

log = logging.getLogger("castnet.live")
MAX_BUFFERED = 8  # segments read ahead of the jobs before the reader waits (TCP backpressure)


class LiveError(Exception):
    """A live stream could not be started or produced nothing."""


@dataclass(frozen=True, slots=True)
class LiveConfig:
    window: int = 6  # segments listed in the live playlists
    segment_s: float = 2.0
    max_in_flight: int = 3  # segments on the network at once
    attempt_timeout_s: float = 20.0  # one try of one segment on one orchestrator
    latency_factor: float = 3.0  # slower than this x the segment's duration: fail over
    read_timeout_s: float = 15.0  # the input may stall this long before the stream counts as ended


@dataclass(slots=True)
class LiveReport:
    out: Path
    job: JobReport  # every segment's outcome (in completion order) and the tickets sent
    published: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failovers: int = 0  # times the session moved to another orchestrator
    ended: str = ""  # why the stream ended: "end of stream", "stopped", or the input's error
    wall_s: float = 0.0
    # seconds from a segment's cut at the gateway to its listing in the live playlist, by seq
    added_latency_s: dict[int, float] = field(default_factory=dict)
    duration_s: dict[int, float] = field(default_factory=dict)  # each segment's media seconds
    cut_at: dict[int, float] = field(default_factory=dict)  # monotonic time of each segment's cut

    def latency_percentile(self, share: float) -> float:
        """The added latency below which `share` (0-1) of the published segments fall."""
        values = sorted(self.added_latency_s.values())
        if not values:
            return 0.0
        return values[min(len(values) - 1, max(0, math.ceil(share * len(values)) - 1))]


PublishFn = Callable[[LiveReport, SegmentOutcome], None]


class LiveSession:
    """One live stream from `url` to a live HLS tree at `out`; `await run()` until it ends."""

    def __init__(
        self,
        gateway: Gateway,
        url: str,
        out: Path,
        profiles: str | None = None,
        config: LiveConfig | None = None,
        on_publish: PublishFn | None = None,
        ai: LiveAi | None = None,
    ) -> None:
        self.gateway, self.url, self.out = gateway, url, out
        self.ladder = parse_profiles(profiles or gateway.config.profiles)
        self.config = config or LiveConfig()
        self.on_publish = on_publish
        self.report = LiveReport(out, JobReport(out, []))
        self.sticky: bytes | None = None  # the session's orchestrator
        self._read_scope = trio.CancelScope()
        self._closed = threading.Event()  # tells the reader thread to let go of the input
        self._arrived: dict[int, float] = {}  # seq -> monotonic time the segment was cut
        self.ai = ai
        self._works: dict[int, LiveAiSegment] = {}  # AI segments until published
        self.demand = Demand()
        self.selector: KeepUpSelector | None = None
        self._key = ""
        if ai is not None:
            self.selector = KeepUpSelector(gateway.selector, ai, self.demand)
            self._key = f"{self.selector.capability} (live {secrets.token_hex(4)})"
            install_selector(gateway, self._key, self.selector)

    def stop(self) -> None:
        """End the stream now (call in the trio thread): in-flight segments still publish."""
        if not self.report.ended:
            self.report.ended = "stopped"
        self._closed.set()
        self._read_scope.cancel()

    async def run(self) -> LiveReport:
        started = time.perf_counter()
        cfg = self.config
        target = math.ceil(1.5 * cfg.segment_s)  # the segmenter cuts at most 1.5 x the target
        output = await trio.to_thread.run_sync(
            lambda: LiveOutput(self.out, window=cfg.window, target=target)
        )
        segs_send, segs_receive = trio.open_memory_channel[Segment](MAX_BUFFERED)
        results_send, results_receive = trio.open_memory_channel[SegmentOutcome](math.inf)
        slots = trio.Semaphore(cfg.max_in_flight)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, segs_send)
                nursery.start_soon(self._publish, results_receive, output)
                async with results_send, trio.open_nursery() as jobs:
                    async for seg in segs_receive:
                        await slots.acquire()
                        jobs.start_soon(self._segment, seg, slots, results_send.clone())
        finally:
            self._closed.set()
            if self._key:
                install_selector(self.gateway, self._key, None)
        self.report.wall_s = time.perf_counter() - started
        await self.gateway.writer.flush_summaries()  # the session's verdicts, network-wide
        if not self.report.published and self.report.ended not in ("stopped", "end of stream"):
            raise LiveError(f"{self.url}: nothing published: {self.report.ended}")
        return self.report

    # -- input -----------------------------------------------------------------------------

    async def _read(self, send: trio.MemorySendChannel[Segment]) -> None:
        token = trio.lowlevel.current_trio_token()
        async with send:
            with self._read_scope:
                try:
                    pump = functools.partial(self._pump, send, token)
                    await trio.to_thread.run_sync(pump, abandon_on_cancel=True)
                    self.report.ended = self.report.ended or "end of stream"
                except MediaError as exc:
                    log.warning("live input %s ended: %s", self.url, exc)
                    self.report.ended = self.report.ended or f"input error: {exc}"

    def _pump(self, send: trio.MemorySendChannel[Segment], token: trio.lowlevel.TrioToken) -> None:
        """Runs in a thread: segment the input and hand each segment to the trio side."""
        segments = segment(self.url, target_duration=self.config.segment_s,
                           timeout=self.config.read_timeout_s, strict=False)  # fmt: skip
        try:
            for seg in segments:
                if self._closed.is_set():
                    return
                self._arrived[seg.seq] = time.monotonic()
                try:
                    trio.from_thread.run(send.send, seg, trio_token=token)
                except (trio.ClosedResourceError, trio.BrokenResourceError, trio.RunFinishedError,
                        trio.Cancelled):  # fmt: skip
                    return
        finally:
            close = getattr(segments, "close", None)
            if close is not None:  # a generator: let go of the input now
                close()

    # -- jobs ------------------------------------------------------------------------------

    async def _segment(
        self, seg: Segment, slots: trio.Semaphore, results: trio.MemorySendChannel[SegmentOutcome]
    ) -> None:
        outcome = SegmentOutcome(seg.seq)
        async with results:
            try:
                self.report.job.segments.append(outcome)
                job, timeout = self.report.job, self.config.attempt_timeout_s
                if self.ai is None:
                    await self.gateway.run_segment(seg, self.ladder, outcome, job, self.sticky,
                                                   timeout)  # fmt: skip
                else:
                    work = self._works[seg.seq] = self._ai_work(seg)
                    await self.gateway.run_work(work, outcome, job, self.sticky, timeout)
                self._follow(seg, outcome)
            finally:
                slots.release()
                results.send_nowait(outcome)

    def _ai_work(self, seg: Segment) -> LiveAiSegment:
        assert self.ai is not None
        # a recheck recomputes with the segment's options (ai_recheck)
        return LiveAiSegment(seg, self.ai.pipeline, self.ai.model,
                             recheck=self.gateway.ai_rechecker, options=self.ai.options,
                             demand=self.demand, key=self._key)  # fmt: skip

    def _follow(self, seg: Segment, outcome: SegmentOutcome) -> None:
        """Keep the session on the orchestrator that served, or move it on a slow answer."""
        if outcome.result is None:
            return  # the failing orchestrators were suspended by the selector
        served = outcome.orchestrator
        budget = self.config.latency_factor * float(seg.duration)
        if outcome.latency_s > budget:
            state = self.gateway.view.state
            selector = self.selector or self.gateway.selector
            others = selector.candidates(state, time.monotonic(), frozenset([served]))
            log.warning("live segment %d took %.2f s (budget %.2f s) on 0x%s: moving the session",
                        seg.seq, outcome.latency_s, budget, served.hex()[:8])  # fmt: skip
            if self.selector is not None:  # measured too slow: only when nobody else is left
                self.selector.slow.add(served)
            self.sticky = others[0].address if others else None
            self.report.failovers += self.sticky is not None
        elif served != self.sticky:
            if self.sticky is not None:
                self.report.failovers += 1
                log.info("live session moved to 0x%s at segment %d", served.hex()[:8], seg.seq)
            self.sticky = served

    # -- output ----------------------------------------------------------------------------

    async def _publish(
        self, results: trio.MemoryReceiveChannel[SegmentOutcome], output: LiveOutput
    ) -> None:
        """Publish outcomes in sequence order as they arrive; ENDLIST when all are in."""
        pending: dict[int, SegmentOutcome] = {}
        following = 0
        async with results:
            async for outcome in results:
                pending[outcome.seq] = outcome
                while following in pending:
                    done = pending.pop(following)
                    work = self._works.pop(done.seq, None)
                    if done.result is not None:
                        publish = functools.partial(self._add, output, done, work)
                        await trio.to_thread.run_sync(publish)
                        self.report.published.append(done.seq)
                    else:
                        self._arrived.pop(done.seq, None)
                        output.skip(done.seq)
                        self.report.skipped.append(done.seq)
                        why = "; ".join(done.errors) or "no result"
                        log.warning("live segment %d skipped after %d attempt(s): %s",
                                    done.seq, done.attempts, why)  # fmt: skip
                    following += 1
                    if self.on_publish is not None:
                        self.on_publish(self.report, done)
        if self.report.published:
            await trio.to_thread.run_sync(output.end)

    def _add(self, output: LiveOutput, done: SegmentOutcome, work: LiveAiSegment | None) -> None:
        """Publish a verified segment (in a thread) and note its added latency."""
        result: TranscodeResult = done.result if work is None else work.rendition(done.result)
        output.add(done.seq, result)
        arrived = self._arrived.pop(done.seq, None)
        if arrived is not None:
            self.report.added_latency_s[done.seq] = time.monotonic() - arrived
            self.report.cut_at[done.seq] = arrived
            self.report.duration_s[done.seq] = float(result.duration)


def check_live_url(url: str) -> str:
    """The URL's scheme if live mode accepts it (a local path is the caller's to check)."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in LIVE_SCHEMES or not rest or any(c in url for c in "\r\n\x00 "):
        raise LiveError(f"{url[:200]!r}: a live URL is {'/'.join(LIVE_SCHEMES)}://... or a path")
    return scheme
