"""The gateway's job records on disk: one per HTTP job (`<gateway dir>/jobs/<id>/job.json`, written
atomically and readable from the API's threads), the folders beside them (the uploaded input, the
output), and the `Retention` policy that deletes finished ones. node.gateway.jobs runs them."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.protocol import DETECTIONS_FILE, VIDEO_PIPELINES

log = logging.getLogger("castnet.jobs")
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
INPUT_NAME = "input"
OUT_NAME = "out"
TRANSCODE, LIVE, AI = "transcode", "live", "ai"
DAY_MS = 86_400_000

MAX_JOBS = 4  # file jobs running at once by default (config gateway.max_jobs)


@dataclass(frozen=True, slots=True)
class Retention:
    """How long finished jobs stay on disk (config `gateway.retention_days`, 0 keeps them
    forever; `gateway.keep_inputs` keeps uploaded inputs until then too)."""

    days: float = 7.0
    keep_inputs: bool = False


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
