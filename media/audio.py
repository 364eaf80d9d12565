"""Carrying an input's audio into MPEG-TS outputs: copied when TS can hold it, else AAC."""

from __future__ import annotations

from fractions import Fraction

import av
import av.container
from av.audio.resampler import AudioResampler

from media.errors import InvalidInput

# Audio codecs the MPEG-TS muxer (and HLS players) accept as they are.
TS_AUDIO_CODECS = frozenset({"aac", "mp3", "mp2", "ac3", "eac3"})
AAC_BITRATE = 128_000


def clone_packet(packet: av.Packet) -> av.Packet:
    """An independent copy of a packet, so several muxers (on several threads) can each own one."""
    copy = av.Packet(bytes(packet))
    copy.pts, copy.dts, copy.duration = packet.pts, packet.dts, packet.duration
    copy.time_base = packet.time_base
    copy.is_keyframe = packet.is_keyframe
    return copy


class AudioCarrier:
    """Turns the packets of one input audio stream into packets an MPEG-TS output can mux."""

    def __init__(self, stream: av.AudioStream) -> None:
        self.stream = stream
        self.copies = stream.codec_context.name in TS_AUDIO_CODECS
        self.codec = stream.codec_context.name if self.copies else "aac"
        self._encoder: av.AudioCodecContext | None = None
        self._resampler: AudioResampler | None = None
        if not self.copies:
            rate = stream.codec_context.sample_rate or 48_000
            layout = "stereo" if stream.codec_context.layout.nb_channels >= 2 else "mono"
            encoder = av.CodecContext.create("aac", "w")
            encoder.sample_rate, encoder.layout, encoder.format = rate, layout, "fltp"
            encoder.bit_rate = AAC_BITRATE
            encoder.time_base = Fraction(1, rate)
            encoder.open()
            self._encoder = encoder
            self._resampler = AudioResampler(format="fltp", layout=layout, rate=rate)

    def add_to(self, container: av.container.OutputContainer) -> av.AudioStream:
        """Add a matching audio stream to an output container."""
        if self._encoder is None:
            return container.add_stream_from_template(self.stream)
        out = container.add_stream("aac", rate=self._encoder.sample_rate)
        out.codec_context.layout = self._encoder.layout
        out.codec_context.bit_rate = AAC_BITRATE
        return out

    def carry(self, packet: av.Packet) -> list[av.Packet]:
        """Output packets for one input packet (none while the AAC encoder fills its buffer)."""
        if self._encoder is None:
            return [packet] if packet.size else []
        try:
            frames = packet.decode()
        except av.FFmpegError as exc:
            raise InvalidInput(f"audio stream is corrupt: {exc}") from exc
        return self._encode(frames)

    def flush(self) -> list[av.Packet]:
        """The encoder's remaining packets at the end of the input (none when copying)."""
        if self._encoder is None:
            return []
        return self._encode([None])

    def _encode(self, frames: list[av.AudioFrame] | list[None]) -> list[av.Packet]:
        assert self._encoder is not None and self._resampler is not None
        out: list[av.Packet] = []
        for frame in frames:
            for resampled in self._resampler.resample(frame):
                out.extend(self._encoder.encode(resampled))
            if frame is None:
                out.extend(self._encoder.encode(None))
        for packet in out:
            packet.time_base = self._encoder.time_base
        return out
