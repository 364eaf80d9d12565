"""Writing transcoded segments as an HLS tree: `master.m3u8`, `<rendition>/index.m3u8`, segments.

A VOD tree is built in a hidden sibling folder and renamed into place only when complete, so a
failed run never leaves something that looks finished. A live tree is written in place with a
sliding window, every file replaced atomically.
"""

from __future__ import annotations

import io
import math
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import av

from media.errors import OutputError
from media.playlists import (
    PlaylistEntry,
    Variant,
    codecs_attribute,
    render_master_playlist,
    render_media_playlist,
)
from media.transcoder import Rendition, TranscodeResult

MASTER = "master.m3u8"
MEDIA = "index.m3u8"


def rendition_dir(name: str) -> str:
    """A folder/URI-safe name for a rendition ("480p:800k" -> "480p_800k")."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def segment_file(seq: int) -> str:
    return f"seg_{seq:05d}.ts"


@dataclass(slots=True)
class _Track:
    """What has been written so far for one rendition."""

    folder: str
    width: int
    height: int
    frame_rate: float
    codecs: str | None
    entries: list[PlaylistEntry] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    first_seq: int = 0
    discontinuity_seq: int = 0  # EXT-X-DISCONTINUITY tags slid out of a live window

    def variant(self) -> Variant:
        rates = [
            8 * size / max(e.duration, 1e-3)
            for size, e in zip(self.sizes, self.entries, strict=True)
        ]
        seconds = sum(e.duration for e in self.entries)
        return Variant(
            uri=f"{self.folder}/{MEDIA}",
            bandwidth=math.ceil(max(rates, default=0)),
            average_bandwidth=math.ceil(8 * sum(self.sizes) / seconds) if seconds else 0,
            width=self.width,
            height=self.height,
            frame_rate=self.frame_rate,
            codecs=self.codecs,
        )


class _Tree:
    """Segment files and playlists under one root folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tracks: dict[str, _Track] = {}

    def add(self, seq: int, result: TranscodeResult, discontinuity: bool = False) -> None:
        for rendition in result.renditions:
            track = self.tracks.get(rendition.name)
            if track is None:
                track = self._new_track(rendition, seq)
            data = rendition.data
            _write_atomic(self.root / track.folder / segment_file(seq), data)
            entry = PlaylistEntry(segment_file(seq), float(rendition.duration), discontinuity)
            track.entries.append(entry)
            track.sizes.append(len(data))

    def _new_track(self, rendition: Rendition, seq: int) -> _Track:
        folder = rendition_dir(rendition.name)
        (self.root / folder).mkdir(parents=True, exist_ok=True)
        track = _Track(
            folder,
            rendition.width,
            rendition.height,
            float(rendition.frame_rate),
            _codecs(rendition.data),
            first_seq=seq,
        )
        self.tracks[rendition.name] = track
        return track

    def write_playlists(self, *, vod: bool, ended: bool, target: int | None = None) -> None:
        for track in self.tracks.values():
            text = render_media_playlist(
                track.entries,
                media_sequence=track.first_seq,
                target=target,
                vod=vod,
                ended=ended,
                discontinuity_sequence=track.discontinuity_seq,
            )
            _write_atomic(self.root / track.folder / MEDIA, text.encode())
        master = render_master_playlist([t.variant() for t in self.tracks.values()])
        _write_atomic(self.root / MASTER, master.encode())


class VodOutput:
    """A VOD HLS tree at `out`, assembled in a temp folder and renamed into place by `commit()`."""

    def __init__(self, out: Path) -> None:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise OutputError(f"{out} exists and is not an empty folder")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            self.staging = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
            self.staging.mkdir()
        except OSError as exc:
            raise OutputError(f"cannot create {out}: {exc}") from exc
        self.out = out
        self.tree = _Tree(self.staging)

    def __enter__(self) -> VodOutput:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()

    def add(self, seq: int, result: TranscodeResult) -> None:
        """Write one segment's renditions."""
        try:
            self.tree.add(seq, result)
        except OSError as exc:
            raise OutputError(f"cannot write segment {seq} under {self.out}: {exc}") from exc

    def commit(self) -> Path:
        """Write the playlists and move the finished tree to `out`."""
        if not self.tree.tracks:
            raise OutputError(f"nothing to write to {self.out}: no segments")
        try:
            self.tree.write_playlists(vod=True, ended=True)
            os.replace(self.staging, self.out)
        except OSError as exc:
            raise OutputError(f"cannot finish {self.out}: {exc}") from exc
        return self.out

    def discard(self) -> None:
        """Remove the staging folder (a no-op after a successful commit)."""
        shutil.rmtree(self.staging, ignore_errors=True)


class LiveOutput:
    """A live HLS tree written in place: playlists list the last `window` segments."""

    def __init__(self, out: Path, *, window: int = 6, target: int = 3) -> None:
        if window < 1:
            raise OutputError(f"live window must hold at least one segment, not {window}")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {out}: {exc}") from exc
        self.out, self.window, self.target = out, window, target
        self.tree = _Tree(out)
        self._gap = False

    def skip(self, seq: int) -> None:
        """Segment `seq` will never come: the next one published opens with EXT-X-DISCONTINUITY
        (nothing is written now; a gap before the first segment needs no tag)."""
        self._gap = bool(self.tree.tracks)

    def add(self, seq: int, result: TranscodeResult) -> None:
        """Publish one segment: write it, slide the window, delete what players no longer need."""
        try:
            self.tree.add(seq, result, self._gap)
            self._gap = False
            stale: list[Path] = []
            for track in self.tree.tracks.values():
                while len(track.entries) > self.window:
                    removed = track.entries.pop(0)
                    stale.append(self.out / track.folder / removed.uri)
                    track.sizes.pop(0)
                    track.first_seq += 1
                    track.discontinuity_seq += removed.discontinuity
            self.tree.write_playlists(vod=False, ended=False, target=self.target)
            # RFC 8216 6.2.2: keep a removed segment for a while; one window's worth is plenty.
            for path in stale:
                older = path.with_name(segment_file(int(path.stem.split("_")[1]) - self.window))
                older.unlink(missing_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot write segment {seq} under {self.out}: {exc}") from exc

    def end(self) -> None:
        """Mark the stream finished (EXT-X-ENDLIST) so players stop polling."""
        try:
            self.tree.write_playlists(vod=False, ended=True, target=self.target)
        except OSError as exc:
            raise OutputError(f"cannot finish {self.out}: {exc}") from exc


def _codecs(data: bytes) -> str | None:
    try:
        with av.open(io.BytesIO(data)) as container:
            video = container.streams.video[0].codec_context
            audio = container.streams.audio[0].codec_context if container.streams.audio else None
            return codecs_attribute(
                video.name,
                video.profile,
                video.level,
                audio.name if audio else None,
                audio.profile if audio else None,
            )
    except (av.FFmpegError, IndexError):
        return None


def _write_atomic(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)
