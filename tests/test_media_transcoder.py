"""The ladder transcoder: one segment in, renditions out, timestamps and durations preserved."""

from __future__ import annotations

import io
import itertools
from fractions import Fraction

import av
import pytest

from media.encoders import choose_encoder
from media.errors import EncoderUnavailable, MediaError
from media.profiles import parse_profiles
from media.progress import Progress
from media.segmenter import segment
from media.transcoder import Rendition, transcode
from tests.media_fixtures import lavfi, ts_bytes, video_file

LADDER = parse_profiles("360p,240p,144p")


def _decode(r: Rendition) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(r.data)) as c:
        return list(c.decode(video=0))


@pytest.fixture(scope="module")
def segment_640() -> bytes:
    """A 2 s, 640x360, 30 fps MPEG-TS segment with AAC audio, starting at 0."""
    return ts_bytes(video_file("src640.mp4", size="640x360", duration=2, audio="aac"))


def test_ladder_sizes_counts_pixels_and_timestamps(segment_640: bytes) -> None:
    seen: list[Progress] = []
    result = transcode(segment_640, LADDER, preset="ultrafast", on_progress=seen.append)
    with av.open(io.BytesIO(segment_640)) as c:
        source_pts = [f.pts for f in c.decode(video=0)]
    assert result.source_frames == len(source_pts) == 60
    assert result.duration == 2 and result.start_pts == source_pts[0]
    sizes = [(r.name, r.width, r.height) for r in result.renditions]
    assert sizes == [("360p", 640, 360), ("240p", 426, 240), ("144p", 256, 144)]
    for r in result.renditions:
        frames = _decode(r)
        assert len(frames) == r.frame_count == 60
        assert r.pixel_count == 60 * r.width * r.height
        assert {(f.width, f.height) for f in frames} == {(r.width, r.height)}
        assert [f.pts for f in frames] == source_pts  # output PTS = input PTS
        assert [f.key_frame for f in frames].count(True) == 1 and frames[0].key_frame
        assert r.duration == 2 and r.start_pts == source_pts[0]
        assert r.has_audio and r.encoder == "libx264"
    # progress: one report per decoded frame, monotonic, ending at the whole segment
    assert [p.frames for p in seen] == list(range(1, 61))
    assert seen[-1].seconds == pytest.approx(2.0)
    assert seen[-1].fraction is not None and seen[-1].fraction > 0.95


def test_audio_is_copied_unchanged_into_every_rendition(segment_640: bytes) -> None:
    with av.open(io.BytesIO(segment_640)) as c:
        source = [(p.pts, bytes(p)) for p in c.demux(audio=0) if p.size]
    result = transcode(segment_640, parse_profiles("240p,144p"), preset="ultrafast")
    for r in result.renditions:
        with av.open(io.BytesIO(r.data)) as c:
            assert c.streams.audio[0].codec_context.name == "aac"
            assert [(p.pts, bytes(p)) for p in c.demux(audio=0) if p.size] == source


def test_later_segments_keep_their_timestamps_and_exact_durations() -> None:
    segments = list(segment(lavfi("320x240", 30, 3), format="lavfi", preset="ultrafast"))
    second = segments[1]
    result = transcode(second.data, parse_profiles("144p"), preset="ultrafast")
    (r,) = result.renditions
    assert r.start_pts == second.start_pts == 180_000
    assert r.duration == second.duration == 1 and r.frame_count == 30
    assert _decode(r)[0].pts == 180_000


def test_frame_rate_cap_drops_frames_evenly(segment_640: bytes) -> None:
    result = transcode(segment_640, parse_profiles("144p15,144p"), preset="ultrafast")
    capped, full = result.renditions
    assert (capped.frame_count, full.frame_count) == (30, 60)
    assert capped.frame_rate == 15 and full.frame_rate == 30
    pts = [f.pts for f in _decode(capped)]
    with av.open(io.BytesIO(segment_640)) as c:
        source_pts = [f.pts for f in c.decode(video=0)]
    # every other source frame, timestamps untouched (which phase depends on the absolute clock)
    assert pts in (source_pts[0::2], source_pts[1::2])
    assert {b - a for a, b in itertools.pairwise(pts)} == {6000}
    assert capped.duration == 2


def test_no_upscaling_and_no_audio_when_the_source_has_none() -> None:
    data = ts_bytes(video_file("small.mp4", size="320x240", duration=1))
    result = transcode(data, parse_profiles("720p,480p,240p"), preset="ultrafast")
    # 720p and 480p both clamp to the source size: one rendition, not two identical ones
    assert [(r.name, r.width, r.height) for r in result.renditions] == [("720p", 320, 240)]
    assert not any(r.has_audio for r in result.renditions)
    for r in result.renditions:
        with av.open(io.BytesIO(r.data)) as c:
            assert not c.streams.audio


def test_hevc_rendition() -> None:
    data = ts_bytes(video_file("small.mp4", size="320x240", duration=1))
    (r,) = transcode(data, parse_profiles("144p/hevc"), preset="ultrafast").renditions
    with av.open(io.BytesIO(r.data)) as c:
        assert c.streams.video[0].codec_context.name == "hevc"
        assert sum(1 for _ in c.decode(video=0)) == r.frame_count == 30
    assert r.encoder == "libx265"


def test_bitrate_follows_the_profile(segment_640: bytes) -> None:
    low, high = transcode(
        segment_640, parse_profiles("360p:300k,360p:2M"), preset="ultrafast"
    ).renditions
    assert len(low.data) < len(high.data) / 3


def test_encoder_choice() -> None:
    assert choose_encoder("h264") == "libx264"
    assert choose_encoder("h264", "auto") in ("h264_nvenc", "libx264")
    with pytest.raises(EncoderUnavailable):
        choose_encoder("h264", "no_such_encoder")
    with pytest.raises(EncoderUnavailable):
        transcode(b"\x47" * 188, preset="warpspeed")
    assert issubclass(EncoderUnavailable, MediaError)


def test_source_timestamps_are_kept_at_any_time_base() -> None:
    # an mp4 (time base 1/15360 from the muxer) transcoded directly, not via a TS segment
    path = video_file("direct.mp4", size="320x240", duration=1)
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        times = [f.pts * stream.time_base for f in c.decode(stream)]
    (r,) = transcode(path, parse_profiles("144p"), preset="ultrafast").renditions
    assert [Fraction(f.pts, 90_000) for f in _decode(r)] == times
