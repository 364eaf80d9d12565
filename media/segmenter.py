"""Cutting any input PyAV opens into ~2 s MPEG-TS segments, each starting on a keyframe.

Video is remuxed untouched while the source's GOPs allow cuts near the target duration; as soon as
a GOP runs past `max_duration` (or the codec cannot live in MPEG-TS) the rest is re-encoded, one
encoder per segment, so every segment opens on an IDR frame. Audio is carried along either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import av.container
import av.video.frame
from av.video.reformatter import VideoReformatter

from media.audio import AudioCarrier
from media.encoders import check_preset, choose_encoder, encoder_options
from media.errors import EmptyInput, InvalidInput, MediaError, TranscodeFailed
from media.source import Source, describe, frame_rate, open_input, video_stream
from media.tsmux import TS_TIME_BASE, TsWriter

TS_VIDEO_CODECS = frozenset({"h264", "hevc", "mpeg2video"})
SOURCE_CRF = "18"  # a re-encoded segment is the source of every rendition: keep it near-transparent


@dataclass(frozen=True, slots=True)
class Segment:
    """One MPEG-TS segment: `start_pts` is in 90 kHz units and equals the source's timestamp."""

    seq: int
    start_pts: int
    duration: Fraction
    data: bytes
    has_audio: bool
    reencoded: bool

    @property
    def start_time(self) -> Fraction:
        return self.start_pts * TS_TIME_BASE


def segment(
    source: Source,
    *,
    target_duration: float = 2.0,
    max_duration: float | None = None,
    format: str | None = None,
    options: dict[str, str] | None = None,
    timeout: float | None = None,
    preset: str = "veryfast",
    strict: bool = True,
) -> Iterator[Segment]:
    """Yield the input's segments as each one completes (so live inputs stream through).

    `strict` refuses an input with a corrupt (e.g. truncated) packet; live feeds that lose packets
    pass False to drop such packets and carry on.
    """
    if target_duration <= 0:
        raise MediaError(f"target duration must be positive, not {target_duration}")
    check_preset(preset)
    name = describe(source)
    with open_input(source, format=format, options=options, timeout=timeout) as container:
        stream = video_stream(container, name)
        cutter = _Cutter(
            container,
            stream,
            Fraction(target_duration).limit_denominator(1000),
            Fraction(max_duration or 1.5 * target_duration).limit_denominator(1000),
            preset,
            name,
            strict,
        )
        yield from cutter.run()


class _Cutter:
    """The state of one segmentation: the pending segment's packets and the current mode."""

    def __init__(
        self,
        container: av.container.InputContainer,
        stream: av.VideoStream,
        target: Fraction,
        max_duration: Fraction,
        preset: str,
        name: str,
        strict: bool,
    ) -> None:
        self.container, self.stream, self.name, self.strict = container, stream, name, strict
        self.target, self.max_duration, self.preset = target, max_duration, preset
        self.time_base = Fraction(stream.time_base or TS_TIME_BASE)
        self.frame_duration = 1 / frame_rate(stream)
        self.audio_stream = container.streams.audio[0] if container.streams.audio else None
        self.carrier = AudioCarrier(self.audio_stream) if self.audio_stream else None
        self.remux = stream.codec_context.name in TS_VIDEO_CODECS
        self.seq = 0
        self.video: list[av.Packet] = []
        self.audio: list[av.Packet] = []
        # re-encode state: the open segment's writer/encoder, its start and the last frame's time
        self.writer: TsWriter | None = None
        self.encoder: av.VideoStream | None = None
        self.audio_out: av.AudioStream | None = None
        self.start: Fraction = Fraction(0)
        self.last_time: Fraction | None = None
        self.reformatter = VideoReformatter()

    def run(self) -> Iterator[Segment]:
        streams = [s for s in (self.stream, self.audio_stream) if s is not None]
        self.stream.thread_type = "AUTO"
        try:
            for packet in self.container.demux(streams):
                if packet.is_corrupt:
                    if self.strict:
                        raise InvalidInput(
                            f"{self.name}: corrupt or truncated packet at {_at(packet)}"
                        )
                    continue
                if packet.stream is self.audio_stream:
                    assert self.carrier is not None
                    self.audio.extend(self.carrier.carry(packet))
                elif self.remux:
                    yield from self._remux_packet(packet)
                else:
                    yield from self._reencode_packet(packet)
            if self.carrier is not None:
                self.audio.extend(self.carrier.flush())
            # demux() ended with an empty packet per stream, which flushed the decoders
            if self.remux:
                if self.video:
                    yield self._cut_remux(None)
            elif self.writer is not None:
                yield self._cut_reencode(None)
        except (av.FFmpegError, TranscodeFailed) as exc:  # the input's packets broke the muxer
            raise InvalidInput(f"{self.name}: input is corrupt or truncated: {exc}") from exc
        finally:
            if self.writer is not None:
                self.writer.abort()
        if self.seq == 0:
            raise EmptyInput(f"{self.name}: no decodable video frames")

    # -- remux ------------------------------------------------------------------------------
    def _remux_packet(self, packet: av.Packet) -> Iterator[Segment]:
        if not packet.size:
            return
        if packet.pts is None or packet.dts is None:
            self.remux = False  # raw elementary streams carry no timestamps: re-encode them
            yield from self._switch_to_reencode(packet)
            return
        if not self.video and not packet.is_keyframe:
            return  # joined mid-GOP: nothing before the first keyframe can be decoded
        time = packet.pts * self.time_base
        if self.video:
            elapsed = time - self.video[0].pts * self.time_base
            if packet.is_keyframe and elapsed >= self.target - self.frame_duration / 2:
                yield self._cut_remux(time)
            elif elapsed > self.max_duration:
                self.remux = False  # this GOP is too long to cut near the target: re-encode
                yield from self._switch_to_reencode(packet)
                return
        self.video.append(packet)

    def _cut_remux(self, end: Fraction | None) -> Segment:
        start = min(p.pts for p in self.video) * self.time_base
        if end is None:
            last = max(self.video, key=lambda p: p.pts)
            tail = last.duration * self.time_base if last.duration else self.frame_duration
            end = last.pts * self.time_base + tail
        writer = TsWriter()
        try:
            video = writer.container.add_stream_from_template(self.stream)
            audio = self.carrier.add_to(writer.container) if self.carrier else None
            writer.mux(self.video, video)
            self._mux_audio(writer, audio, end)
            data = writer.finish()
        except BaseException:
            writer.abort()
            raise
        self.video = []
        return self._segment(start, end - start, data, reencoded=False)

    def _switch_to_reencode(self, packet: av.Packet) -> Iterator[Segment]:
        pending, self.video = [*self.video, packet], []
        for queued in pending:
            yield from self._reencode_packet(queued)

    # -- re-encode --------------------------------------------------------------------------
    def _reencode_packet(self, packet: av.Packet) -> Iterator[Segment]:
        for frame in packet.decode():
            if frame.pts is None:
                previous = self.last_time if self.last_time is not None else -self.frame_duration
                frame.pts = round((previous + self.frame_duration) / self.time_base)
                frame.time_base = self.time_base
            time = frame.pts * self.time_base
            if (
                self.writer is not None
                and time - self.start >= self.target - self.frame_duration / 2
            ):
                yield self._cut_reencode(time)
            if self.writer is None:
                self._open_reencode(frame, time)
            assert self.writer is not None and self.encoder is not None
            frame.pict_type = av.video.frame.PictureType.NONE
            if frame.format.name != "yuv420p":
                frame = self.reformatter.reformat(frame, format="yuv420p")
            self.writer.mux(self.encoder.encode(frame), self.encoder)
            self.last_time = time

    def _open_reencode(self, frame: av.VideoFrame, time: Fraction) -> None:
        encoder_name = choose_encoder("h264")
        writer = TsWriter()
        options = {**encoder_options(encoder_name, self.preset), "crf": SOURCE_CRF}
        encoder = writer.container.add_stream(encoder_name, rate=1 / self.frame_duration)
        encoder.width, encoder.height, encoder.pix_fmt = frame.width, frame.height, "yuv420p"
        encoder.codec_context.time_base = self.time_base
        encoder.codec_context.gop_size = 100_000  # only the segment's first frame is a keyframe
        encoder.codec_context.options = options
        self.audio_out = self.carrier.add_to(writer.container) if self.carrier else None
        self.writer, self.encoder, self.start = writer, encoder, time

    def _cut_reencode(self, end: Fraction | None) -> Segment:
        assert self.writer is not None and self.encoder is not None
        writer, encoder = self.writer, self.encoder
        self.writer = self.encoder = None
        try:
            writer.mux(encoder.encode(None), encoder)
            if end is None:
                assert self.last_time is not None
                end = self.last_time + self.frame_duration
            self._mux_audio(writer, self.audio_out, end)
            data = writer.finish()
        except BaseException:
            writer.abort()
            raise
        return self._segment(self.start, end - self.start, data, reencoded=True)

    # -- shared -----------------------------------------------------------------------------
    def _mux_audio(
        self, writer: TsWriter, stream: av.AudioStream | None, end: Fraction | None
    ) -> None:
        """Mux the pending audio that starts before `end` (all of it at the end of input)."""
        if stream is None:
            return
        take: list[av.Packet] = []
        keep: list[av.Packet] = []
        for packet in self.audio:
            early = end is None or packet.pts is None or packet.pts * packet.time_base < end
            (take if early else keep).append(packet)
        self.audio = keep
        writer.mux(take, stream)

    def _segment(
        self, start: Fraction, duration: Fraction, data: bytes, reencoded: bool
    ) -> Segment:
        seg = Segment(
            seq=self.seq,
            start_pts=round(start / TS_TIME_BASE),
            duration=duration,
            data=data,
            has_audio=self.carrier is not None,
            reencoded=reencoded,
        )
        self.seq += 1
        return seg


def _at(packet: av.Packet) -> str:
    if packet.pts is None or packet.time_base is None:
        return "unknown time"
    return f"{float(packet.pts * packet.time_base):.3f} s"
