"""Opening inputs with PyAV and describing their video: every failure becomes a `MediaError`."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import av.container
import av.stream

from media.errors import EmptyInput, InvalidInput, NoVideoStream, UnsupportedResolution

# What castnet will process: up to 8K, and nothing smaller than a 16x16 thumbnail.
MIN_SIDE = 16
MAX_SIDE = 8192
MAX_PIXELS = 8192 * 4320

# FFmpeg renders any text file as video through these demuxers (ANSI art, subtitles as frames)
TEXT_FORMATS = frozenset({"tty", "bin", "xbin", "adf", "idf"})

Source = str | Path | bytes | BinaryIO


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What castnet needs to know about an input's video (and whether it carries audio)."""

    width: int
    height: int
    rate: Fraction
    time_base: Fraction
    duration: float | None
    video_codec: str
    audio_codec: str | None

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None

    @property
    def frame_duration(self) -> Fraction:
        return 1 / self.rate


def describe(source: Source) -> str:
    """A short human name for an input, for error messages."""
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    if isinstance(source, str | Path):
        return str(source)
    return repr(source)


@contextmanager
def open_input(
    source: Source,
    *,
    format: str | None = None,
    options: dict[str, str] | None = None,
    timeout: float | None = None,
) -> Iterator[av.container.InputContainer]:
    """Open an input for reading (path, URL, lavfi graph, bytes or a binary file object)."""
    name = describe(source)
    if isinstance(source, bytes):
        if not source:
            raise EmptyInput(f"{name}: input is empty")
        target: str | BinaryIO = io.BytesIO(source)
    elif isinstance(source, Path):
        target = str(source)
    else:
        target = source
    if isinstance(target, str) and Path(target).is_file() and Path(target).stat().st_size == 0:
        raise EmptyInput(f"{name}: file is empty")
    try:
        container = av.open(target, "r", format=format, options=options or {}, timeout=timeout)
    except FileNotFoundError as exc:
        raise InvalidInput(f"{name}: no such file") from exc
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise InvalidInput(f"{name}: cannot open as media: {_reason(exc)}") from exc
    try:
        if container.format.name in TEXT_FORMATS:
            raise InvalidInput(f"{name}: a text file ({container.format.name}), not video")
        yield container
    finally:
        container.close()


def video_stream(container: av.container.InputContainer, name: str) -> av.VideoStream:
    """The input's first video stream, checked for a sane size; raise if there is none."""
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        raise NoVideoStream(f"{name}: no video stream (found {', '.join(kinds)})")
    stream = container.streams.video[0]
    check_resolution(stream.codec_context.width, stream.codec_context.height, name)
    return stream


def check_resolution(width: int, height: int, name: str) -> None:
    """Refuse frame sizes outside MIN_SIDE..MAX_SIDE per side or above MAX_PIXELS."""
    if width == 0 or height == 0:
        raise UnsupportedResolution(f"{name}: video stream has no frame size")
    if (
        not MIN_SIDE <= width <= MAX_SIDE
        or not MIN_SIDE <= height <= MAX_SIDE
        or width * height > MAX_PIXELS
    ):
        raise UnsupportedResolution(
            f"{name}: {width}x{height} is outside {MIN_SIDE}..{MAX_SIDE} per side"
            f" and {MAX_PIXELS} pixels"
        )


def frame_rate(stream: av.VideoStream) -> Fraction:
    """The stream's nominal frame rate, falling back to 30 when the container gives none."""
    for rate in (stream.average_rate, stream.base_rate, stream.guessed_rate):
        if rate and 0 < rate <= 1000:
            return Fraction(rate)
    return Fraction(30)


def probe(source: Source, *, format: str | None = None) -> SourceInfo:
    """Describe an input's video and audio without decoding it."""
    name = describe(source)
    with open_input(source, format=format) as container:
        stream = video_stream(container, name)
        audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
        duration = container.duration / av.time_base if container.duration else None
        return SourceInfo(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            rate=frame_rate(stream),
            time_base=Fraction(stream.time_base or Fraction(1, 90000)),
            duration=duration,
            video_codec=stream.codec_context.name,
            audio_codec=audio,
        )


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(": '", 1)[0]
