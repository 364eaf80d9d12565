"""The gateway's HTTP jobs: a record per job on disk (`<gateway dir>/jobs/<id>/job.json`, written
atomically, readable from the API's threads) and a trio runner that hands them to
`Gateway.transcode_file` (AI jobs, `kind == "ai"`, to `ai_jobs.run_ai_file`), up to `max_jobs`
at once (config `gateway.max_jobs`; 1 runs them one after another), the rest waiting in order of
arrival (`queue_position`). Jobs running together share the orchestrators through the gateway's
segment scheduler (node.gateway.scheduler), so a short job is not held up by a long one. On
start the runner re-queues every job a stopped process left queued or running, so a restarted
gateway finishes them, from the segments it had verified (node.gateway.journal): those are not
posted, sent or paid for again. Live jobs (`kind == "live"`, live) run beside the queue, each
until its stream ends or `stop()`; a restart marks an interrupted live job failed (its stream
is gone) instead of replaying it.

At start the runner removes interrupted uploads (a job folder without a record: the process
stopped while the input was arriving), and it applies the `Retention` policy at start and
every hour: an uploaded input is deleted once its job has finished (unless `keep_inputs`),
and a finished job (record, input and output) once it is `days` old."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from node.gateway.ai_jobs import DETECTIONS_FILE, run_ai_file
from node.gateway.journal import SegmentJournal
from node.gateway.live import LiveReport, LiveSession
from node.gateway.live_ai import live_ai
from node.gateway.role import Gateway, SegmentOutcome
from node.protocol import VIDEO_PIPELINES

log = logging.getLogger("castnet.jobs")
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
INPUT_NAME = "input"
OUT_NAME = "out"
JOURNAL_NAME = "segments"  # node.gateway.journal: how far each segment got, for a restart
MAX_QUEUE = 1000
MAX_JOBS = 4  # file jobs running at once by default (config gateway.max_jobs)
TRANSCODE, LIVE, AI = "transcode", "live", "ai"
MAX_LIVE = 8  # live streams at once
SEGMENT_JOBS = 100  # jobs whose per-segment outcomes are kept in memory (for the dashboard)
RETENTION_INTERVAL_S = 3600.0
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Retention:
    """How long finished jobs stay on disk (config `gateway.retention_days`, 0 keeps them
    forever; `gateway.keep_inputs` keeps uploaded inputs until then too)."""

    days: float = 7.0
    keep_inputs: bool = False


class QueueFull(Exception):
    """The runner already holds MAX_QUEUE jobs (or MAX_LIVE live streams)."""


class NotStoppable(Exception):
    """DELETE on a live job that is no longer running."""


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: str
    source: str  # the file transcoded: an upload kept in the job's folder, or a local path
    profiles: str
    uploaded: bool = False
    status: str = QUEUED
    created_ms: int = 0
    started_ms: int = 0
    finished_ms: int = 0
    runs: int = 0  # > 1 when a restart resumed it
    segments_total: int = 0
    segments_done: int = 0
    segments_failed: int = 0
    orchestrators: tuple[str, ...] = ()
    error: str = ""
    kind: str = TRANSCODE  # or LIVE: `source` is then the stream URL; or AI
    ended: str = ""  # a live job: why its stream ended
    pipeline: str = ""  # an AI job: the inference pipeline (detect-faces, filter, ...)
    model: str = ""  # an AI job: the model asked for ("" for each orchestrator's default)
    options: dict[str, Any] = field(default_factory=dict)  # an AI job's pipeline options

    def public(self) -> dict[str, Any]:
        """What `GET /v1/jobs/{id}` shows."""
        total = self.segments_total
        out: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "profiles": self.profiles,
            "source": "upload" if self.uploaded else self.source,
            "progress": {
                "segments_total": total,
                "segments_done": self.segments_done,
                "segments_failed": self.segments_failed,
                "fraction": round(self.segments_done / total, 4) if total else 0.0,
            },
            "runs": self.runs,
            "created_ms": self.created_ms,
            "started_ms": self.started_ms,
            "finished_ms": self.finished_ms,
            "orchestrators": list(self.orchestrators),
            "error": self.error,
        }
        if self.kind == LIVE:
            out["kind"], out["ended"] = LIVE, self.ended
            out["progress"]["segments_published"] = self.segments_done
            if self.pipeline:  # live AI
                out["pipeline"], out["model"], out["options"] = (self.pipeline, self.model,
                                                                 self.options)  # fmt: skip
        if self.kind == AI:
            out["kind"], out["pipeline"], out["model"] = AI, self.pipeline, self.model
            out["options"] = self.options
            del out["profiles"]
            if self.status == DONE:
                name = "master.m3u8" if self.pipeline in VIDEO_PIPELINES else DETECTIONS_FILE
                out["files"] = [f"/v1/jobs/{self.id}/{name}"]
                if self.pipeline in VIDEO_PIPELINES:
                    out["playlist"] = out["files"][0]
        elif self.status == DONE or (self.kind == LIVE and self.segments_done):
            out["playlist"] = f"/v1/jobs/{self.id}/master.m3u8"
        return out


class JobBook:
    """Job records under `root`; every method is thread-safe."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._records: dict[str, JobRecord] = {}
        for path in sorted(self.root.glob("*/job.json")):
            try:
                raw = json.loads(path.read_text())
                raw["orchestrators"] = tuple(raw.get("orchestrators", ()))
                record = JobRecord(**raw)
            except (OSError, ValueError, TypeError) as exc:
                log.warning("skipping unreadable job record %s: %s", path, exc)
                continue
            self._records[record.id] = record

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(16)

    def job_dir(self, job_id: str) -> Path:
        if not JOB_ID.match(job_id):
            raise KeyError(job_id)
        return self.root / job_id

    def out_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / OUT_NAME

    def input_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / INPUT_NAME

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._records.get(job_id)

    def all(self) -> list[JobRecord]:
        with self._lock:
            return sorted(self._records.values(), key=lambda r: r.created_ms)

    def put(self, record: JobRecord, sync: bool = True) -> JobRecord:
        """Store (temp file, fsync unless `sync` is False, rename), then publish to readers."""
        folder = self.job_dir(record.id)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "job.json.tmp"
        with open(tmp, "w") as f:
            json.dump(dataclasses.asdict(record), f)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, folder / "job.json")
        with self._lock:
            self._records[record.id] = record
        return record

    def update(self, job_id: str, sync: bool = True, **changes: Any) -> JobRecord:
        record = self.get(job_id)
        if record is None:
            raise KeyError(job_id)
        return self.put(dataclasses.replace(record, **changes), sync)

    def remove(self, job_id: str) -> None:
        """Forget a job and delete its folder (record, input, output)."""
        with self._lock:
            self._records.pop(job_id, None)
        folder = self.job_dir(job_id)
        # the record goes first, so a crash halfway leaves a folder the next start removes
        (folder / "job.json").unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)

    def remove_interrupted_uploads(self) -> list[str]:
        """Delete job folders that have no record: uploads (or removals) cut short by a stopped
        process. Call only before the API takes uploads. Returns the job ids removed."""
        removed = []
        for folder in sorted(self.root.iterdir()):
            if not JOB_ID.match(folder.name) or not folder.is_dir():
                continue
            if folder.name in self._records or (folder / "job.json").exists():
                continue
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
        return removed

    def apply_retention(self, policy: Retention, now: int) -> tuple[int, int]:
        """Delete what `policy` no longer keeps of finished jobs, as of `now` (ms); returns
        (jobs removed, inputs removed)."""
        jobs = inputs = 0
        for record in self.all():
            if record.status not in (DONE, FAILED):
                continue
            finished = record.finished_ms or record.created_ms  # refused at once: never started
            if policy.days > 0 and now - finished >= policy.days * DAY_MS:
                self.remove(record.id)
                jobs += 1
            elif not policy.keep_inputs and record.uploaded:
                path = self.input_path(record.id)
                if path.exists():
                    path.unlink(missing_ok=True)
                    inputs += 1
        return jobs, inputs


def now_ms() -> int:
    return int(time.time() * 1000)


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
