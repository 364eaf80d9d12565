"""The gateway's HTTP jobs: a trio runner that takes the job records on disk (node.gateway.job_book)
and hands them to `Gateway.transcode_file` (AI jobs, `kind == "ai"`, to `ai_jobs.run_ai_file`), up
to `max_jobs` at once (config `gateway.max_jobs`; 1 runs them one after another), the rest waiting
in order of arrival (`queue_position`). Jobs running together share the orchestrators through the
gateway's segment scheduler (node.gateway.scheduler), so a short job is not held up by a long one.
On start the runner re-queues every job a stopped process left queued or running, so a restarted
gateway finishes them, from the segments it had verified (node.gateway.journal): those are not
posted, sent or paid for again. Live jobs (`kind == "live"`, live) run beside the queue, each until
its stream ends or `stop()`; a restart marks an interrupted live job failed (its stream is gone)
instead of replaying it.

At start the runner removes interrupted uploads (a job folder without a record: the process
stopped while the input was arriving), and it applies the `Retention` policy at start and
every hour: an uploaded input is deleted once its job has finished (unless `keep_inputs`),
and a finished job (record, input and output) once it is `days` old."""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections import deque
from pathlib import Path
from typing import Any

import trio

from node.gateway.ai_jobs import run_ai_file
from node.gateway.job_book import (
    AI,
    DONE,
    FAILED,
    LIVE,
    MAX_JOBS,
    QUEUED,
    RUNNING,
    JobBook,
    Retention,
    now_ms,
)
from node.gateway.journal import SegmentJournal
from node.gateway.live import LiveReport, LiveSession
from node.gateway.live_ai import live_ai
from node.gateway.role import Gateway, SegmentOutcome

log = logging.getLogger("castnet.jobs")
JOURNAL_NAME = "segments"  # node.gateway.journal: how far each segment got, for a restart
MAX_QUEUE = 1000
MAX_LIVE = 8  # live streams at once
SEGMENT_JOBS = 100  # jobs whose per-segment outcomes are kept in memory (for the dashboard)
RETENTION_INTERVAL_S = 3600.0


class QueueFull(Exception):
    """The runner already holds MAX_QUEUE jobs (or MAX_LIVE live streams)."""


class NotStoppable(Exception):
    """DELETE on a live job that is no longer running."""


class JobRunner:
    """Runs the book's file jobs on the gateway, up to `max_jobs` at once in order of arrival (a
    job's segments run in parallel), and live jobs beside them."""

    def __init__(
        self,
        gateway: Gateway,
        book: JobBook,
        min_offers: int = 1,
        offer_wait_s: float = 30.0,
        retention: Retention | None = None,
        max_jobs: int = MAX_JOBS,
    ) -> None:
        if max_jobs < 1:
            raise ValueError(f"max_jobs must be at least 1, not {max_jobs}")
        self.gateway = gateway
        self.book = book
        self.retention = retention or Retention()
        self.min_offers = min_offers
        self.offer_wait_s = offer_wait_s
        self.max_jobs = max_jobs
        self.queue: deque[str] = deque()  # file jobs waiting, first to start on the left
        self.running: dict[str, None] = {}  # file jobs running, in the order they started
        self._queued = trio.Event()  # set (and replaced) when a job joins the queue
        self.live: dict[str, LiveSession | None] = {}  # None until its session starts
        self.segments: dict[str, dict[int, dict[str, Any]]] = {}  # recent jobs: seq -> outcome
        self._nursery: trio.Nursery | None = None

    @property
    def current(self) -> str | None:
        """The file job that started first of those running (None when none runs)."""
        return next(iter(self.running), None)

    def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to start, 2 for the one after, ...; 0 while the job runs; None
        for a job the runner does not hold (finished, or a live job)."""
        if job_id in self.running:
            return 0
        try:
            return self.queue.index(job_id) + 1
        except ValueError:
            return None

    def enqueue(self, job_id: str) -> None:
        """Queue a stored job (a live job starts at once); call in the trio thread (the API uses
        trio.from_thread)."""
        record = self.book.get(job_id)
        if record is not None and record.kind == LIVE:
            if len(self.live) >= MAX_LIVE or self._nursery is None:
                raise QueueFull(f"{MAX_LIVE} live streams are already running")
            self.live[job_id] = None
            self._nursery.start_soon(self._run_live, job_id)
            return
        if len(self.queue) >= MAX_QUEUE:
            raise QueueFull(f"{MAX_QUEUE} jobs are already queued")
        if job_id in self.queue or job_id in self.running:
            return
        self.queue.append(job_id)
        self._queued.set()
        self._queued = trio.Event()

    def stop(self, job_id: str) -> str:
        """Stop a live job (its playlist ends after the segments in flight); returns the job's
        status. Call in the trio thread."""
        record = self.book.get(job_id)
        if record is None:
            raise KeyError(job_id)
        if record.kind == LIVE and job_id in self.live:
            session = self.live[job_id]
            if session is None:  # still waiting for offers: it will not start
                self.live[job_id] = _STOPPED
            elif session is not _STOPPED:
                session.stop()
            return "stopping"
        raise NotStoppable(f"job {job_id} is {record.status}: only a running live job can be "
                           "stopped")  # fmt: skip

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            cut = await trio.to_thread.run_sync(self.book.remove_interrupted_uploads)
            for job_id in cut:
                log.warning("removed interrupted upload %s (the gateway stopped while it arrived)",
                            job_id)  # fmt: skip
            await self.apply_retention()
            nursery.start_soon(self._retention_loop)
            resumed = []
            for record in self.book.all():
                if record.status not in (QUEUED, RUNNING):
                    continue
                if record.kind == LIVE:
                    log.warning("live job %s was interrupted by a restart", record.id)
                    await self._finish(record.id, FAILED, "interrupted: the gateway restarted")
                    continue
                log.info("resuming job %s (was %s)", record.id, record.status)
                self.enqueue(record.id)
                resumed.append(record)
            for _ in range(self.max_jobs):
                nursery.start_soon(self._work)
            task_status.started(len(resumed))

    async def _work(self) -> None:
        """One of `max_jobs` lanes: take the job at the head of the queue, run it, repeat."""
        while True:
            while not self.queue:
                await self._queued.wait()
            job_id = self.queue.popleft()
            self.running[job_id] = None
            try:
                await self._run(job_id)
            except Exception as exc:  # e.g. a full disk writing its record: the lane goes on
                log.exception("job %s stopped on an unexpected error", job_id)
                with contextlib.suppress(Exception):
                    await self._finish(job_id, FAILED, f"internal error: {exc}"[:2000])
            finally:
                del self.running[job_id]

    async def apply_retention(self) -> None:
        jobs, inputs = await trio.to_thread.run_sync(
            self.book.apply_retention, self.retention, now_ms()
        )
        if jobs or inputs:
            log.info("retention: removed %d finished job(s) older than %g day(s) and %d "
                     "uploaded input(s) of finished jobs", jobs, self.retention.days,
                     inputs)  # fmt: skip

    async def _retention_loop(self) -> None:
        while True:
            await trio.sleep(RETENTION_INTERVAL_S)
            try:
                await self.apply_retention()
            except OSError as exc:  # a disk problem must not stop the runner; next hour again
                log.warning("retention pass failed: %s", exc)

    async def _run_live(self, job_id: str) -> None:
        try:
            record = self.book.get(job_id)
            if record is None:
                return
            record = await trio.to_thread.run_sync(
                lambda: self.book.update(job_id, status=RUNNING, started_ms=now_ms(), runs=1)
            )
            offers = await self.gateway.wait_for_offers(self.min_offers, self.offer_wait_s)
            if self.live.get(job_id) is _STOPPED:
                await self._finish(job_id, DONE, "", ended="stopped before it started")
                return
            if offers < self.min_offers:
                await self._finish(job_id, FAILED, f"no orchestrator offers after "
                                   f"{self.offer_wait_s:g} s ({offers} known)")  # fmt: skip
                return

            def progress(report: LiveReport, outcome: SegmentOutcome) -> None:
                used = sorted({"0x" + o.orchestrator.hex() for o in report.job.segments
                               if o.result is not None})  # fmt: skip
                self.book.update(job_id, False, segments_total=len(report.job.segments),
                                 segments_done=len(report.published),
                                 segments_failed=len(report.skipped),
                                 orchestrators=tuple(used))  # fmt: skip

            out = self.book.out_dir(job_id)
            session: LiveSession | None = None
            try:
                ai = None
                if record.pipeline:  # live AI: checked at the API, checked again here
                    ai = live_ai(record.pipeline, record.model, record.options)
                session = LiveSession(self.gateway, record.source, out, record.profiles,
                                      on_publish=progress, ai=ai)  # fmt: skip
                self.live[job_id] = session
                report = await session.run()
            except Exception as exc:  # the job fails with a message; the gateway goes on
                log.warning("live job %s failed: %s", job_id, exc)
                ended = session.report.ended[:2000] if session is not None else ""
                await self._finish(job_id, FAILED, str(exc)[:2000] or type(exc).__name__,
                                   ended=ended)  # fmt: skip
                return
            await self._finish(job_id, DONE, "", ended=report.ended[:2000])
            log.info("live job %s ended (%s): %d segments published, %d skipped", job_id,
                     report.ended, len(report.published), len(report.skipped))  # fmt: skip
        finally:
            self.live.pop(job_id, None)

    async def _run(self, job_id: str) -> None:
        record = self.book.get(job_id)
        if record is None or record.status not in (QUEUED, RUNNING):
            return
        out = self.book.out_dir(job_id)
        await trio.to_thread.run_sync(_clear_partial, out)
        record = await trio.to_thread.run_sync(
            lambda: self.book.update(
                job_id,
                status=RUNNING,
                started_ms=now_ms(),
                runs=record.runs + 1,
                segments_done=0,
                segments_failed=0,
                error="",
            )
        )
        offers = await self.gateway.wait_for_offers(self.min_offers, self.offer_wait_s)
        if offers < self.min_offers:
            await self._finish(job_id, FAILED, f"no orchestrator offers after "
                               f"{self.offer_wait_s:g} s ({offers} known)")  # fmt: skip
            return
        done = failed = 0
        used: list[str] = []

        def progress(count: int, total: int, outcome: SegmentOutcome) -> None:
            nonlocal done, failed
            if outcome.result is not None:
                done += 1
                who = "0x" + outcome.orchestrator.hex()
                if who not in used:
                    used.append(who)
            else:
                failed += 1
            self._record_segment(job_id, outcome)
            # progress lines are small and rewritten often: no fsync in the trio thread
            self.book.update(job_id, False, segments_total=total, segments_done=done,
                             segments_failed=failed, orchestrators=tuple(used))  # fmt: skip

        journal = SegmentJournal(self.book.job_dir(job_id) / JOURNAL_NAME)
        try:
            if record.kind == AI:
                await run_ai_file(self.gateway, record.pipeline, record.source, out, record.model,
                                  progress, journal, record.options)  # fmt: skip
            else:
                await self.gateway.transcode_file(record.source, out, progress, record.profiles,
                                                  journal)  # fmt: skip
        except Exception as exc:  # the job fails with a message; the runner goes on
            log.warning("job %s failed: %s", job_id, exc)
            await trio.to_thread.run_sync(journal.clear)
            await self._finish(job_id, FAILED, str(exc)[:2000] or type(exc).__name__)
            return
        await trio.to_thread.run_sync(journal.clear)  # the output holds every segment now
        await self._finish(job_id, DONE, "")
        log.info("job %s done: %d segments", job_id, done)

    def _record_segment(self, job_id: str, outcome: SegmentOutcome) -> None:
        if job_id not in self.segments and len(self.segments) >= SEGMENT_JOBS:
            del self.segments[next(iter(self.segments))]  # the oldest job's
        self.segments.setdefault(job_id, {})[outcome.seq] = {
            "seq": outcome.seq,
            "orchestrator": "0x" + outcome.orchestrator.hex() if outcome.orchestrator else "",
            "attempts": outcome.attempts,
            "verdict": "verified" if outcome.result is not None else "failed",
            "latency_s": round(outcome.latency_s, 3),
            "errors": list(outcome.errors)[-3:],
        }

    async def _finish(self, job_id: str, status: str, error: str, **more: Any) -> None:
        record = await trio.to_thread.run_sync(
            lambda: self.book.update(
                job_id, status=status, error=error, finished_ms=now_ms(), **more
            )
        )
        if record.uploaded and not self.retention.keep_inputs:  # the output is all that is left
            await trio.to_thread.run_sync(self.book.input_path(job_id).unlink, True)


_STOPPED: Any = object()  # a live job stopped before its session started


def _clear_partial(out: Path) -> None:
    """Leftovers of an interrupted run: a staging folder, or an output from a killed commit."""
    for leftover in out.parent.glob(f".{out.name}.partial-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if out.exists():
        shutil.rmtree(out, ignore_errors=True)
