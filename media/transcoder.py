"""One segment in, an ABR ladder out: decode once, scale and encode every rendition in parallel.

Each rendition has its own thread, scaler, encoder and MPEG-TS muxer; PyAV releases the GIL while
scaling and encoding, so the renditions share the cores. Output timestamps equal input timestamps.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import av.video.frame
from av.video.reformatter import Interpolation, VideoReformatter

from media.audio import AudioCarrier, clone_packet
from media.cadence import capped_rate, keeps_frame
from media.encoders import check_preset, choose_encoder, encoder_options
from media.errors import EmptyInput, InvalidInput, TranscodeFailed
from media.profiles import DEFAULT_LADDER, Profile, RenditionSpec, plan_ladder
from media.progress import Progress, ProgressCallback
from media.source import Source, describe, frame_rate, open_input, video_stream
from media.tsmux import TS_TIME_BASE, TsWriter

QUEUE_DEPTH = 8


@dataclass(frozen=True, slots=True)
class Rendition:
    """One encoded rung: MPEG-TS bytes and the facts a payment and a verifier need about them."""

    name: str
    codec: str
    encoder: str
    width: int
    height: int
    frame_count: int
    start_pts: int  # 90 kHz, equal to the source's first frame
    duration: Fraction
    frame_rate: Fraction
    bitrate: int
    has_audio: bool
    data: bytes

    @property
    def pixel_count(self) -> int:
        """Output pixels, the unit orchestrators are paid in: frames x width x height."""
        return self.frame_count * self.width * self.height


@dataclass(frozen=True, slots=True)
class TranscodeResult:
    """All renditions of one segment, with the source facts they were made from."""

    renditions: tuple[Rendition, ...]
    source_width: int
    source_height: int
    source_frames: int
    start_pts: int
    duration: Fraction
    wall_seconds: float


def transcode(
    source: Source,
    ladder: Sequence[Profile] = DEFAULT_LADDER,
    *,
    preset: str = "veryfast",
    encoder: str = "software",
    format: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> TranscodeResult:
    """Transcode one input (normally a ~2 s MPEG-TS segment) into every rendition of `ladder`.

    `encoder` is "software", "auto" (NVENC when it opens) or an FFmpeg encoder name.
    """
    check_preset(preset)
    started = time.perf_counter()
    name = describe(source)
    with open_input(source, format=format) as container:
        stream = video_stream(container, name)
        stream.thread_type = "AUTO"
        ctx = stream.codec_context
        specs = plan_ladder(tuple(ladder), ctx.width, ctx.height)
        audio = container.streams.audio[0] if container.streams.audio else None
        carrier = AudioCarrier(audio) if audio is not None else None
        rate = frame_rate(stream)
        time_base = Fraction(stream.time_base or TS_TIME_BASE)
        total = container.duration / av.time_base if container.duration else None
        workers = [
            _RenditionWorker(spec, choose_encoder(spec.profile.codec, encoder), preset, rate,
                             time_base, carrier)
            for spec in specs
        ]  # fmt: skip
        decoder = _Decoder(container, stream, carrier, workers, rate, time_base, on_progress, total)
        for worker in workers:
            worker.start()
        try:
            decoder.run(name)
        finally:
            for worker in workers:
                worker.finish()
        errors = [w.error for w in workers if w.error is not None]
        if errors:
            raise TranscodeFailed(f"{name}: encoding failed: {errors[0]}") from errors[0]
        if decoder.frames == 0:
            raise EmptyInput(f"{name}: no decodable video frames")
        assert decoder.first is not None and decoder.last is not None
        duration = (decoder.last - decoder.first) * time_base + 1 / rate
        return TranscodeResult(
            renditions=tuple(w.rendition(decoder.first, time_base, duration) for w in workers),
            source_width=ctx.width,
            source_height=ctx.height,
            source_frames=decoder.frames,
            start_pts=round(decoder.first * time_base / TS_TIME_BASE),
            duration=duration,
            wall_seconds=time.perf_counter() - started,
        )


class _Decoder:
    """The calling thread's loop: demux, decode once, hand frames and audio packets to workers."""

    def __init__(
        self,
        container: av.container.InputContainer,
        stream: av.VideoStream,
        carrier: AudioCarrier | None,
        workers: list[_RenditionWorker],
        rate: Fraction,
        time_base: Fraction,
        on_progress: ProgressCallback | None,
        total: float | None,
    ) -> None:
        self.container, self.stream, self.carrier, self.workers = (
            container,
            stream,
            carrier,
            workers,
        )
        self.step = round(1 / rate / time_base) or 1
        self.time_base, self.on_progress, self.total = time_base, on_progress, total
        self.frames = 0
        self.first: int | None = None
        self.last: int | None = None

    def run(self, name: str) -> None:
        streams = [self.stream] + ([self.carrier.stream] if self.carrier else [])
        try:
            for packet in self.container.demux(streams):
                if packet.is_corrupt:
                    raise InvalidInput(f"{name}: corrupt or truncated packet")
                if self.carrier is not None and packet.stream is self.carrier.stream:
                    self._send_audio(self.carrier.carry(packet))
                    continue
                for frame in packet.decode():
                    self._send_frame(frame)
                if any(w.error for w in self.workers):
                    return
            if self.carrier is not None:
                self._send_audio(self.carrier.flush())
        except av.FFmpegError as exc:
            raise InvalidInput(f"{name}: input is corrupt or truncated: {exc}") from exc

    def _send_frame(self, frame: av.VideoFrame) -> None:
        if frame.pts is None:  # elementary streams without timestamps: number the frames
            frame.pts = (self.last + self.step) if self.last is not None else 0
            frame.time_base = self.time_base
        # Decoded frames keep the source's I marks, and x264 would honour them as extra keyframes.
        frame.pict_type = av.video.frame.PictureType.NONE
        if self.first is None:
            self.first = frame.pts
        self.last = frame.pts
        self.frames += 1
        for worker in self.workers:
            worker.put(frame)
        if self.on_progress is not None:
            seconds = float((frame.pts - self.first + self.step) * self.time_base)
            self.on_progress(Progress(self.frames, seconds, self.total))

    def _send_audio(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            for worker in self.workers:
                worker.put(clone_packet(packet))


class _RenditionWorker:
    """A thread that scales, encodes and muxes one rendition from the frames it is handed."""

    def __init__(
        self,
        spec: RenditionSpec,
        encoder_name: str,
        preset: str,
        source_rate: Fraction,
        time_base: Fraction,
        carrier: AudioCarrier | None,
    ) -> None:
        self.spec, self.encoder_name = spec, encoder_name
        self.source_frame_duration = 1 / source_rate
        self.time_base = time_base
        self.rate = capped_rate(source_rate, spec.profile.fps)
        self.queue: queue.Queue[av.VideoFrame | av.Packet | None] = queue.Queue(QUEUE_DEPTH)
        self.error: BaseException | None = None
        self.frames = 0
        self.data = b""
        self.writer = TsWriter()
        self.video = self.writer.container.add_stream(encoder_name, rate=self.rate)
        self.video.width, self.video.height, self.video.pix_fmt = spec.width, spec.height, "yuv420p"
        codec = self.video.codec_context
        codec.time_base = time_base  # so that output PTS equals input PTS
        codec.bit_rate = spec.profile.bitrate
        codec.gop_size = 100_000  # one keyframe per segment: its first frame
        codec.options = encoder_options(encoder_name, preset)
        self.audio = carrier.add_to(self.writer.container) if carrier is not None else None
        self.reformatter = VideoReformatter()
        self.thread = threading.Thread(target=self._run, name=f"rendition-{spec.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def put(self, item: av.VideoFrame | av.Packet) -> None:
        self.queue.put(item)

    def finish(self) -> None:
        """Signal the end of input and wait for the encoder to drain and the muxer to close."""
        self.queue.put(None)
        self.thread.join()

    def _run(self) -> None:
        ended = False
        try:
            while (item := self.queue.get()) is not None:
                if isinstance(item, av.VideoFrame):
                    self._encode(item)
                elif self.audio is not None:
                    self.writer.mux([item], self.audio)
            ended = True
            self.writer.mux(self.video.encode(None), self.video)
            self.data = self.writer.finish()
        except Exception as exc:  # any failure must reach the caller, not kill the thread silently
            self.error = exc
            self.writer.abort()
            while not ended and self.queue.get() is not None:  # drain: never block the decoder
                pass

    def _encode(self, frame: av.VideoFrame) -> None:
        time_ = frame.pts * self.time_base
        if not keeps_frame(time_, self.source_frame_duration, self.spec.profile.fps):
            return
        scaled = self.reformatter.reformat(
            frame, self.spec.width, self.spec.height, "yuv420p",
            interpolation=Interpolation.BILINEAR, threads=1,
        )  # fmt: skip
        self.writer.mux(self.video.encode(scaled), self.video)
        self.frames += 1

    def rendition(self, first_pts: int, time_base: Fraction, duration: Fraction) -> Rendition:
        spec = self.spec
        return Rendition(
            name=spec.name,
            codec=spec.profile.codec,
            encoder=self.encoder_name,
            width=spec.width,
            height=spec.height,
            frame_count=self.frames,
            start_pts=round(first_pts * time_base / TS_TIME_BASE),
            duration=duration,
            frame_rate=self.rate,
            bitrate=spec.profile.bitrate,
            has_audio=self.audio is not None,
            data=self.data,
        )
