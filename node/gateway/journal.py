"""How far each segment of a file job got, kept in the job's folder so that a restarted gateway
resumes the job instead of starting over: the id of every segment's JobPosted (a segment is
posted once), and the outputs of every verified segment with the orchestrator's signed result
(a verified segment is neither sent, transcoded nor paid for again). The gateway's log stays the
truth: a kept segment counts only when the log holds its accepted verdict, or holds its
assignment so the verdict can still be recorded (node.gateway.market decides).

Files, one per segment, each written to a temp file, fsynced and renamed:
`<seq>.posted` (the 32-byte JobPosted id) and `<seq>.kept` (msgpack
`[1, job_id, result_raw, latency_ms, [output metadata...], [output bytes...]]`, the outputs as
they came off the wire)."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

log = logging.getLogger("castnet.gateway")
FORMAT = 1


@dataclass(frozen=True, slots=True)
class KeptSegment:
    """A verified segment's outputs, kept before its verdict was logged."""

    job_id: bytes
    result: bytes  # the orchestrator's signed JobResult, as received
    latency_ms: int
    metas: list[Any]
    blobs: list[bytes]


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
            version, job_id, result, latency_ms, metas, blobs = items
            if version != FORMAT or not (type(job_id) is bytes and type(result) is bytes):
                raise ValueError("unknown format")
            if not (isinstance(metas, list) and isinstance(blobs, list)):
                raise ValueError("outputs are not lists")
            if len(metas) != len(blobs) or not all(type(b) is bytes for b in blobs):
                raise ValueError("outputs do not match their metadata")
            return KeptSegment(job_id, result, int(latency_ms), metas, blobs)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            log.warning("ignoring damaged kept segment %s: %s", self._path(seq, "kept"), exc)
            return None

    def keep(self, seq: int, kept: KeptSegment) -> None:
        data = msgpack.packb([FORMAT, kept.job_id, kept.result, kept.latency_ms, kept.metas,
                              kept.blobs])  # fmt: skip
        self._write(seq, "kept", data)

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
