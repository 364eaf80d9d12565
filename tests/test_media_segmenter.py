"""The segmenter: ~2 s MPEG-TS segments starting on keyframes, remuxed or re-encoded, with audio."""

from __future__ import annotations

import io
import itertools
import socket
import threading
from fractions import Fraction

import av
import pytest

from media.segmenter import Segment, segment
from tests.media_fixtures import bbb_clip, lavfi, ts_bytes, video_file


def _frames(seg: Segment) -> list[tuple[int, bool]]:
    with av.open(io.BytesIO(seg.data)) as c:
        return [(f.pts, f.key_frame) for f in c.decode(video=0)]


def _audio_packets(seg: Segment) -> int:
    with av.open(io.BytesIO(seg.data)) as c:
        if not c.streams.audio:
            return 0
        return sum(1 for p in c.demux(audio=0) if p.size)


def _check_contiguous(segments: list[Segment], fps: int) -> None:
    """Segments tile the timeline: each starts where the previous ended, on a keyframe."""
    for seg, nxt in itertools.pairwise(segments):
        assert seg.start_time + seg.duration == nxt.start_time
    for seg in segments:
        frames = _frames(seg)
        assert frames[0] == (seg.start_pts, True)
        if seg.reencoded:  # one encoder per segment: its only keyframe is the first frame
            assert [k for _, k in frames].count(True) == 1
        assert len(frames) == seg.duration * fps
        assert seg.data[0] == 0x47  # MPEG-TS sync byte


def test_raw_generated_video_is_reencoded_into_2s_segments() -> None:
    segments = list(segment(lavfi("320x240", 30, 5), format="lavfi", preset="ultrafast"))
    assert [s.seq for s in segments] == [0, 1, 2]
    assert [s.duration for s in segments] == [2, 2, 1]
    assert all(s.reencoded and not s.has_audio for s in segments)
    assert segments[0].start_pts == 0
    _check_contiguous(segments, 30)


def test_short_gops_are_remuxed_untouched_at_keyframes() -> None:
    path = video_file("gop30.mp4", duration=5, gop=30)
    segments = list(segment(path))
    assert [s.duration for s in segments] == [2, 2, 1]
    assert not any(s.reencoded for s in segments)
    _check_contiguous(segments, 30)
    # remuxed: the compressed frames are the source's, byte for byte
    with av.open(str(path)) as src:
        source = [bytes(p) for p in src.demux(video=0) if p.size]
    remuxed = []
    for seg in segments:
        with av.open(io.BytesIO(seg.data)) as c:
            remuxed += [bytes(p) for p in c.demux(video=0) if p.size]
    assert len(remuxed) == len(source) == 150


def test_long_gop_switches_to_reencoding_with_keyframes_every_2s() -> None:
    segments = list(segment(video_file("longgop.mp4", duration=5)))  # one keyframe only
    assert [s.duration for s in segments] == [2, 2, 1]
    assert all(s.reencoded for s in segments)
    _check_contiguous(segments, 30)


def test_gop_between_target_and_limit_gives_longer_segments() -> None:
    segments = list(segment(video_file("gop75.mp4", duration=5, gop=75)))  # 2.5 s GOPs
    assert [s.duration for s in segments] == [Fraction(5, 2), Fraction(5, 2)]
    assert not any(s.reencoded for s in segments)


def test_real_clip_audio_is_carried_into_every_segment() -> None:
    segments = list(segment(bbb_clip(), target_duration=1.0, preset="ultrafast"))
    assert [s.duration for s in segments] == [1, 1]
    assert all(s.has_audio and _audio_packets(s) > 0 for s in segments)
    _check_contiguous(segments, 25)
    # every AAC frame (1024 samples at 48 kHz) lands in exactly one segment
    with av.open(str(bbb_clip())) as src:
        source_audio = sum(1 for p in src.demux(audio=0) if p.size)
    assert sum(_audio_packets(s) for s in segments) == source_audio


def test_audio_that_mpegts_cannot_hold_is_reencoded_to_aac() -> None:
    segments = list(segment(video_file("pcm.mkv", audio="pcm_s16le", duration=2, gop=30)))
    assert len(segments) == 1
    with av.open(io.BytesIO(segments[0].data)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
        packets = [p for p in c.demux(audio=0) if p.size]
    # about 2 s of 1024-sample frames at 48 kHz
    assert 90 <= len(packets) <= 96


def test_live_tcp_input_yields_segments_before_the_stream_ends() -> None:
    data = ts_bytes(video_file("live.mp4", size="160x120", duration=6, gop=30))
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    first_seen = threading.Event()
    held_back = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(data[: len(data) // 2])
            held_back.set()
            first_seen.wait(timeout=60)
            conn.sendall(data[len(data) // 2 :])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    segments = []
    try:
        live = segment(
            f"tcp://127.0.0.1:{port}",
            format="mpegts",
            options={"probesize": "32768", "analyzeduration": "100000"},
            timeout=30,
        )
        for seg in live:
            if not segments:
                # the second half has not been sent yet: this segment came from the live feed
                assert held_back.is_set() and not first_seen.is_set()
                first_seen.set()
            segments.append(seg)
    finally:
        first_seen.set()
        thread.join(timeout=30)
        server.close()
    assert [s.duration for s in segments] == [2, 2, 2]
    assert not any(s.reencoded for s in segments)


def test_bad_target_duration() -> None:
    from media.errors import MediaError

    with pytest.raises(MediaError):
        list(segment(lavfi(), format="lavfi", target_duration=0))
