"""Putting a segment's audio back beside a processed video: both streams are copied (no
re-encode) into one MPEG-TS with their timestamps kept, so an AI-processed live segment plays with
the sound it came with. Blocking: call from a thread."""

from __future__ import annotations

import io

import av

from media.errors import InvalidInput
from media.tsmux import TsWriter


def with_audio(video: bytes, source: bytes) -> bytes:
    """`video` (MPEG-TS) with the first audio stream of `source` (the segment it was made from)
    muxed in; `video` unchanged when the source has no audio. InvalidInput when either does not
    demux."""
    try:
        with av.open(io.BytesIO(source)) as src:
            if not src.streams.audio:
                return video
            with av.open(io.BytesIO(video)) as vid:
                if not vid.streams.video:
                    raise InvalidInput("the processed video has no video stream")
                return _mux(vid, src)
    except av.FFmpegError as exc:
        raise InvalidInput(f"cannot carry the segment's audio: {exc}") from exc


def _mux(vid: av.container.InputContainer, src: av.container.InputContainer) -> bytes:
    writer = TsWriter()
    try:
        video_in, audio_in = vid.streams.video[0], src.streams.audio[0]
        video_out = writer.container.add_stream_from_template(video_in)
        audio_out = writer.container.add_stream_from_template(audio_in)
        # the muxer interleaves by timestamp; video first keeps its stream index 0
        for packet in vid.demux(video_in):
            if packet.dts is not None:
                writer.mux([packet], video_out)
        for packet in src.demux(audio_in):
            if packet.dts is not None and packet.size:
                writer.mux([packet], audio_out)
        return writer.finish()
    except BaseException:
        writer.abort()
        raise
