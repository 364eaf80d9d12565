"""HLS output: the real clip through the whole pipeline, opened by ffprobe and PyAV, verified, and
tampered with; playlist rendering; live sliding windows."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import av
import pytest

from media.hls import MASTER, LiveOutput
from media.pipeline import LadderSummary, transcode_to_hls
from media.playlists import (
    PlaylistEntry,
    codecs_attribute,
    read_master,
    read_media,
    render_media_playlist,
    target_duration,
)
from media.profiles import parse_profiles
from media.segmenter import segment
from media.transcoder import transcode
from media.verify_hls import verify_hls
from tests.media_fixtures import bbb_clip, lavfi, video_file

FFPROBE = shutil.which("ffprobe")


@pytest.fixture(scope="module")
def bbb_hls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LadderSummary]:
    """Two seconds of Big Buck Bunny (720p25, 5.1 AAC) as a 720p/480p/360p HLS ladder."""
    out = tmp_path_factory.mktemp("bbb") / "hls"
    summary = transcode_to_hls(bbb_clip(), out, preset="superfast")
    return out, summary


def test_real_clip_ladder_has_right_sizes_frames_durations_and_audio(
    bbb_hls: tuple[Path, LadderSummary],
) -> None:
    out, summary = bbb_hls
    assert summary.segments == 1 and summary.duration == pytest.approx(2.0)
    variants = read_master(out / MASTER)
    assert [(v.uri, v.width, v.height) for v in variants] == [
        ("720p/index.m3u8", 1280, 720),
        ("480p/index.m3u8", 854, 480),
        ("360p/index.m3u8", 640, 360),
    ]
    assert all(
        v.codecs and v.codecs.startswith("avc1.") and "mp4a.40.2" in v.codecs for v in variants
    )
    for variant in variants:
        entries, ended = read_media(out / variant.uri)
        assert ended and sum(e.duration for e in entries) == pytest.approx(2.0)
        with av.open(str(out / variant.uri)) as c:  # PyAV's HLS demuxer reads the playlist
            assert c.streams.audio, "audio must be carried into every rendition"
            frames = list(c.decode(video=0))
        assert len(frames) == 50
        assert {(f.width, f.height) for f in frames} == {(variant.width, variant.height)}
    assert [(r.name, r.frames, r.pixels) for r in summary.renditions] == [
        ("720p", 50, 50 * 1280 * 720),
        ("480p", 50, 50 * 854 * 480),
        ("360p", 50, 50 * 640 * 360),
    ]


def test_ffprobe_accepts_the_master_playlist(bbb_hls: tuple[Path, LadderSummary]) -> None:
    out, _ = bbb_hls
    assert FFPROBE is not None, "ffprobe missing: apt-get install ffmpeg (.ci/run installs it)"
    probe = subprocess.run(
        [FFPROBE, "-v", "error", "-count_frames", "-of", "json", "-show_streams",
         str(out / MASTER)],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert probe.stderr == ""
    streams = json.loads(probe.stdout)["streams"]
    video = sorted((s["width"], s["height"], int(s["nb_read_frames"])) for s in streams
                   if s["codec_type"] == "video")  # fmt: skip
    assert video == [(640, 360, 50), (854, 480, 50), (1280, 720, 50)]
    audio = [s for s in streams if s["codec_type"] == "audio"]
    assert len(audio) == 3 and {s["codec_name"] for s in audio} == {"aac"}


def test_real_clip_output_verifies_with_high_psnr(bbb_hls: tuple[Path, LadderSummary]) -> None:
    out, _ = bbb_hls
    verdict = verify_hls(out, bbb_clip())
    assert verdict.ok, verdict.reasons
    psnr = {v.name: v.psnr for v in verdict.renditions}
    # measured here at superfast: 720p ~42 dB, 480p ~37 dB, 360p ~35 dB (vs a Lanczos-scaled source)
    assert psnr["720p"] is not None and psnr["720p"] >= 38, psnr
    assert all(p is not None and p >= 33 for p in psnr.values()), psnr


def test_a_swapped_segment_fails_verification(
    bbb_hls: tuple[Path, LadderSummary], tmp_path: Path
) -> None:
    out, _ = bbb_hls
    copy = tmp_path / "hls"
    shutil.copytree(out, copy)
    # replace the 360p segment by a 360p rendition of other content with the same timestamps
    other = transcode_to_hls(
        video_file("bbb_impostor.mp4", size="1280x720", rate=25, duration=2, audio="aac"),
        tmp_path / "other",
        parse_profiles("360p"),
        preset="ultrafast",
    )
    shutil.copy(other.out / "360p" / "seg_00000.ts", copy / "360p" / "seg_00000.ts")
    (copy / "480p" / "seg_00000.ts").unlink()
    verdict = verify_hls(copy, bbb_clip())
    assert not verdict.ok
    by_name = {v.name: v for v in verdict.renditions}
    assert by_name["720p"].ok
    assert any(r.startswith("quality") for r in by_name["360p"].reasons)
    assert any(r.startswith("playlist") for r in by_name["480p"].reasons)


def test_generated_ladder_with_frame_rate_cap_verifies(tmp_path: Path) -> None:
    source = lavfi("640x360", 30, 3)
    summary = transcode_to_hls(source, tmp_path / "hls", parse_profiles("360p,144p15"),
                               preset="ultrafast", format="lavfi")  # fmt: skip
    assert [(r.name, r.frames) for r in summary.renditions] == [("360p", 90), ("144p15", 45)]
    entries, _ = read_media(tmp_path / "hls" / "360p" / "index.m3u8")
    assert [e.duration for e in entries] == [2.0, 1.0]
    verdict = verify_hls(tmp_path / "hls", source, source_format="lavfi")
    assert verdict.ok, verdict.reasons


def test_live_output_slides_its_window_and_ends(tmp_path: Path) -> None:
    out = tmp_path / "live"
    live = LiveOutput(out, window=2, target=1)
    segments = list(segment(lavfi("160x120", 30, 3), format="lavfi", target_duration=0.5,
                            preset="ultrafast"))  # fmt: skip
    assert len(segments) == 6
    for seg in segments:
        live.add(seg.seq, transcode(seg.data, parse_profiles("144p"), preset="ultrafast"))
        entries, ended = read_media(out / "144p" / "index.m3u8")
        assert not ended and len(entries) == min(seg.seq + 1, 2)
        assert entries[-1].uri == f"seg_{seg.seq:05d}.ts"
    text = (out / "144p" / "index.m3u8").read_text()
    assert "#EXT-X-MEDIA-SEQUENCE:4" in text and "PLAYLIST-TYPE" not in text
    # segments that left the window stay one more window, then are deleted
    assert sorted(p.name for p in (out / "144p").glob("*.ts")) == [
        f"seg_{i:05d}.ts" for i in (2, 3, 4, 5)
    ]
    live.end()
    assert read_media(out / "144p" / "index.m3u8")[1]
    assert read_master(out / MASTER)[0].width == 160


def test_media_playlist_rules() -> None:
    entries = [PlaylistEntry("a.ts", 2.0), PlaylistEntry("b.ts", 2.4), PlaylistEntry("c.ts", 0.5)]
    assert target_duration([e.duration for e in entries]) == 3
    assert target_duration([2.0, 2.0004]) == 2
    text = render_media_playlist(entries)
    assert text.splitlines()[:5] == [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        "#EXT-X-TARGETDURATION:3",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
    ]
    assert text.endswith("#EXTINF:0.500000,\nc.ts\n#EXT-X-ENDLIST\n")
    assert codecs_attribute("h264", "High", 31, "aac", "LC") == "avc1.64001F,mp4a.40.2"
    assert codecs_attribute("h264", "Constrained Baseline", 30, None, None) == "avc1.42E01E"
    assert codecs_attribute("hevc", "Main", 93, None, None) is None
