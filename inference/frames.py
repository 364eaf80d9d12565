"""Video in and out for pipelines: decoded frames from any input `media/` can open, and an H.264
writer that publishes its file only when complete (temp file + rename)."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.container
import av.video.frame
import numpy as np
from av.video.reformatter import VideoReformatter

from inference.errors import InputUnreadable, OutputFailed
from media.encoders import choose_encoder, encoder_options
from media.errors import MediaError
from media.source import Source, describe, frame_rate, open_input, video_stream


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """The facts about an input a pipeline needs before its first frame."""

    name: str
    width: int
    height: int
    rate: Fraction
    time_base: Fraction
    duration: float | None


@dataclass(slots=True)
class Frame:
    """One decoded frame: its index and timestamp, and the decoded picture itself."""

    index: int
    pts: int
    time: float
    picture: av.VideoFrame

    def stamp(self) -> FrameStamp:
        return FrameStamp(self.index, self.pts, self.time)


@dataclass(frozen=True, slots=True)
class FrameStamp:
    """Where a frame sits in its video, kept after its picture has been handed to a model."""

    index: int
    pts: int
    time: float


@contextmanager
def open_video(
    source: Source, *, format: str | None = None, threads: int = 0
) -> Iterator[tuple[VideoInfo, Iterator[Frame]]]:
    """Open an input; yields its description and an iterator over its decoded frames, decoded on
    `threads` threads (0: FFmpeg's choice, one per core).

    Every decode failure, at open or mid-stream, becomes an `InputUnreadable`.
    """
    name = describe(source)
    try:
        with open_input(source, format=format) as container:
            stream = video_stream(container, name)
            stream.thread_type = "AUTO" if threads != 1 else "NONE"
            stream.codec_context.thread_count = threads
            rate = frame_rate(stream)
            time_base = Fraction(stream.time_base or Fraction(1, 90000))
            duration = container.duration / av.time_base if container.duration else None
            info = VideoInfo(
                name, stream.codec_context.width, stream.codec_context.height,
                rate, time_base, duration,
            )  # fmt: skip
            yield info, _decode(container, stream, info)
    except MediaError as exc:
        raise InputUnreadable(str(exc)) from exc


def _decode(
    container: av.container.InputContainer, stream: av.VideoStream, info: VideoInfo
) -> Iterator[Frame]:
    step = round(1 / info.rate / info.time_base) or 1
    index, last = 0, -step
    try:
        for packet in container.demux(stream):
            if packet.is_corrupt:
                raise InputUnreadable(f"{info.name}: corrupt or truncated packet")
            for picture in packet.decode():
                pts = picture.pts if picture.pts is not None else last + step
                last = pts
                yield Frame(index, pts, float(pts * info.time_base), picture)
                index += 1
    except av.FFmpegError as exc:
        raise InputUnreadable(f"{info.name}: input is corrupt or truncated: {exc}") from exc
    if index == 0:
        raise InputUnreadable(f"{info.name}: no decodable video frames")


class VideoWriter:
    """Encodes RGB frames to H.264: into `path` (renamed into place on `close`) or into memory.

    The container is chosen by `path`'s suffix (mp4 when none); in memory it is MPEG-TS, the
    segment format of the network.
    """

    def __init__(
        self,
        path: Path | None,
        width: int,
        height: int,
        rate: Fraction,
        time_base: Fraction,
        *,
        preset: str = "veryfast",
        encoder: str = "software",
    ) -> None:
        self.path, self.width, self.height = path, width & ~1, height & ~1
        self.frames = 0
        self._scaler = VideoReformatter()  # one scaler for the stream: rebuilt per frame is slow
        self._temp: Path | None = None
        self._buffer: io.BytesIO | None = None
        try:
            name = choose_encoder("h264", encoder)
            if path is None:
                self._buffer = io.BytesIO()
                # the output keeps the source's timestamps: with B-frames (presets above
                # ultrafast) the muxer must not shift them to make the first dts non-negative
                self.container = av.open(
                    self._buffer, "w", format="mpegts", options={"avoid_negative_ts": "disabled"}
                )
            else:
                fd, temp = tempfile.mkstemp(
                    prefix=f".{path.name}.", suffix=".part", dir=path.parent
                )
                os.close(fd)
                self._temp = Path(temp)
                self.container = av.open(temp, "w", format=_format_for(path))
            self.stream: av.VideoStream = self.container.add_stream(name, rate=rate)  # type: ignore[assignment]
            self.stream.width, self.stream.height = self.width, self.height
            self.stream.pix_fmt = "yuv420p"
            self.stream.codec_context.time_base = time_base  # output PTS equal input PTS
            self.stream.codec_context.options = encoder_options(name, preset)
        except (MediaError, av.FFmpegError, OSError, ValueError) as exc:
            self.abort()
            raise OutputFailed(f"cannot write video to {path or 'memory'}: {exc}") from exc

    def write(self, image: np.ndarray, pts: int, pixel_format: str = "rgb24") -> None:
        """Encode one image (H, W, 3 uint8, rgb24 or bgr24) with the source frame's timestamp."""
        try:
            frame = av.VideoFrame.from_ndarray(image, format=pixel_format)
        except ValueError as exc:
            raise OutputFailed(f"frame {self.frames} is not an image: {exc}") from exc
        self.write_frame(frame, pts)

    def write_frame(self, frame: av.VideoFrame, pts: int) -> None:
        """Encode one frame of any pixel format with the source frame's timestamp."""
        try:
            frame.pts = pts
            # one swscale thread: the encoder and the model keep the cores
            frame = self._scaler.reformat(frame, self.width, self.height, "yuv420p", threads=1)
            frame.pts = pts
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
            self.frames += 1
        except (av.FFmpegError, ValueError) as exc:
            raise OutputFailed(f"encoding frame {self.frames} failed: {exc}") from exc

    def close(self) -> bytes | None:
        """Flush and publish: rename the temp file into place, or return the in-memory bytes."""
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
            self.container.close()
        except (av.FFmpegError, ValueError, OSError) as exc:
            self.abort()
            raise OutputFailed(f"finishing {self.path or 'video'} failed: {exc}") from exc
        if self._buffer is not None:
            return self._buffer.getvalue()
        assert self.path is not None and self._temp is not None
        os.replace(self._temp, self.path)
        self._temp = None
        return None

    def abort(self) -> None:
        """Drop everything written so far; no partial file is left behind."""
        container = getattr(self, "container", None)
        if container is not None:
            with contextlib.suppress(av.FFmpegError, ValueError, OSError):
                container.close()
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
            self._temp = None


def _format_for(path: Path) -> str:
    """The muxer for an output name (the temp file's `.part` suffix hides it from FFmpeg)."""
    return {".ts": "mpegts", ".mkv": "matroska", ".mov": "mov"}.get(path.suffix.lower(), "mp4")
