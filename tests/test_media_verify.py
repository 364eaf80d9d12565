"""Verifying one rendition against its source segment: right passes, each kind of wrong fails."""

from __future__ import annotations

import dataclasses
import io
import random

import av
import pytest

from media.profiles import parse_profiles
from media.transcoder import Rendition, transcode
from media.verify import Claim, sample_keys, verify_rendition, verify_renditions
from tests.media_fixtures import ts_bytes, video_file


@pytest.fixture(scope="module")
def source() -> bytes:
    return ts_bytes(video_file("verify_src.mp4", size="640x360", duration=1, audio="aac"))


@pytest.fixture(scope="module")
def renditions(source: bytes) -> dict[str, Rendition]:
    result = transcode(source, parse_profiles("360p,240p,144p15"), preset="veryfast")
    return {r.name: r for r in result.renditions}


def _failed(verdict_reasons: tuple[str, ...]) -> set[str]:
    return {reason.split(":")[0] for reason in verdict_reasons}


@pytest.mark.parametrize("name", ["360p", "240p", "144p15"])
def test_right_renditions_pass_with_high_quality(
    source: bytes, renditions: dict[str, Rendition], name: str
) -> None:
    r = renditions[name]
    verdict = verify_rendition(r.data, Claim.of(r), source, name=name)
    assert verdict.ok, verdict.reasons
    assert verdict.reasons == ()
    assert verdict.psnr is not None and verdict.psnr >= 35
    assert verdict.ssim is not None and verdict.ssim >= 0.95
    assert verdict.pixel_count == r.pixel_count
    assert verdict.duration == pytest.approx(1.0)


def test_different_content_fails_on_the_picture_checks_alone(source: bytes) -> None:
    # same size, frame count, timestamps and audio: only the pictures differ
    other = ts_bytes(video_file("verify_other.mp4", size="640x360", duration=1, audio="aac",
                                pattern="testsrc"))  # fmt: skip
    (wrong,) = transcode(other, parse_profiles("240p"), preset="veryfast").renditions
    verdict = verify_rendition(wrong.data, Claim.of(wrong), source)
    assert not verdict.ok
    assert _failed(verdict.reasons) == {"content", "quality"}
    assert verdict.psnr is not None and verdict.psnr < 20


def test_a_lie_about_pixels_fails_the_claim(
    source: bytes, renditions: dict[str, Rendition]
) -> None:
    r = renditions["240p"]
    frames = r.frame_count + 5
    inflated = dataclasses.replace(
        Claim.of(r), frame_count=frames, pixel_count=frames * r.width * r.height
    )
    verdict = verify_rendition(r.data, inflated, source)
    assert _failed(verdict.reasons) == {"claim"}


def test_dropped_frames_fail_frames_and_timing(source: bytes) -> None:
    half = transcode(source, parse_profiles("240p15"), preset="ultrafast").renditions[0]
    claim = dataclasses.replace(Claim.of(half), frame_rate=None)  # pretends to be full rate
    verdict = verify_rendition(half.data, claim, source)
    assert {"frames", "timing"} <= _failed(verdict.reasons)


def test_wrong_size_or_distorted_aspect_fails_resolution(
    source: bytes, renditions: dict[str, Rendition]
) -> None:
    r = renditions["240p"]
    verdict = verify_rendition(r.data, dataclasses.replace(Claim.of(r), width=320,
                               pixel_count=r.frame_count * 320 * r.height), source)  # fmt: skip
    assert "resolution" in _failed(verdict.reasons)


def test_missing_audio_fails(source: bytes, renditions: dict[str, Rendition]) -> None:
    r = renditions["240p"]
    buffer = io.BytesIO()
    with (
        av.open(io.BytesIO(r.data)) as src,
        av.open(buffer, "w", format="mpegts", options={"avoid_negative_ts": "disabled"}) as out,
    ):
        video = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(video=0):
            if packet.size:
                packet.stream = video
                out.mux(packet)
    verdict = verify_rendition(buffer.getvalue(), Claim.of(r), source)
    assert _failed(verdict.reasons) == {"audio"}


def test_undecodable_rendition_fails(source: bytes) -> None:
    claim = Claim(426, 240, 30, 426 * 240 * 30)
    verdict = verify_rendition(b"\x47" + b"\x00" * 2000, claim, source)
    assert not verdict.ok and "decodes" in _failed(verdict.reasons)
    assert verdict.frames == 0 and verdict.psnr is None


def test_a_whole_ladder_is_judged_like_its_renditions_one_by_one(
    source: bytes, renditions: dict[str, Rendition]
) -> None:
    items = [(r.data, Claim.of(r), name) for name, r in renditions.items()]
    r = renditions["240p"]
    liar = dataclasses.replace(Claim.of(r), pixel_count=Claim.of(r).pixel_count * 2)
    items.append((r.data, liar, "240p-liar"))
    together = verify_renditions(items, source, rng=random.Random(5))
    draws = random.Random(5)  # the same frames, drawn in the same order
    alone = [verify_rendition(d, claim, source, name=name, rng=draws) for d, claim, name in items]
    assert [v.name for v in together] == [*renditions, "240p-liar"]
    assert [v.ok for v in together] == [True, True, True, False]
    for a, b in zip(together, alone, strict=True):
        assert (a.reasons, a.frames, a.psnr, a.ssim) == (b.reasons, b.frames, b.psnr, b.ssim)


def _fake(rendition: Rendition, keep: set[int]) -> bytes:
    """The rendition re-encoded with every frame not in `keep` (by index) blacked out; timestamps,
    frame count, size and audio stay exactly as they were."""
    out = io.BytesIO()
    with (
        av.open(io.BytesIO(rendition.data)) as src,
        av.open(out, "w", format="mpegts", options={"avoid_negative_ts": "disabled"}) as dst,
    ):
        video_in = src.streams.video[0]
        audio_in = src.streams.audio[0] if src.streams.audio else None
        video = dst.add_stream("libx264", rate=video_in.average_rate)
        video.width, video.height, video.pix_fmt = rendition.width, rendition.height, "yuv420p"
        video.codec_context.time_base = video_in.time_base  # output PTS = input PTS
        audio = dst.add_stream_from_template(audio_in) if audio_in is not None else None
        index = 0
        for packet in src.demux([s for s in (video_in, audio_in) if s is not None]):
            if packet.stream is audio_in:
                if packet.dts is not None:
                    packet.stream = audio
                    dst.mux(packet)
                continue
            for frame in packet.decode():
                if index not in keep:
                    planes = frame.to_ndarray()
                    planes[: frame.height] = 16  # black luma, chroma untouched
                    black = av.VideoFrame.from_ndarray(planes, format="yuv420p")
                    black.pts, black.time_base = frame.pts, frame.time_base
                    frame = black
                frame.pict_type = av.video.frame.PictureType.NONE
                dst.mux(video.encode(frame))
                index += 1
        dst.mux(video.encode(None))
    return out.getvalue()


def test_faking_all_but_the_frames_an_even_sampler_would_score_is_caught(
    source: bytes, renditions: dict[str, Rendition]
) -> None:
    r = renditions["360p"]
    step = r.frame_count / 4  # the frames the old, predictable sampler scored
    kept = {min(r.frame_count - 1, int(step * i + step / 2)) for i in range(4)}
    fake = _fake(r, kept)
    verdict = verify_rendition(fake, Claim.of(r), source)
    assert not verdict.ok
    failed = _failed(verdict.reasons)
    assert "content" in failed and {"frames", "timing", "audio", "claim"}.isdisjoint(failed)
    content = next(reason for reason in verdict.reasons if reason.startswith("content"))
    assert f"{r.frame_count - 4} of {r.frame_count} frames differ" in content


def test_one_faked_frame_is_caught_whichever_frames_are_sampled(
    source: bytes, renditions: dict[str, Rendition]
) -> None:
    r = renditions["240p"]
    fake = _fake(r, set(range(r.frame_count)) - {r.frame_count // 2})
    for seed in range(3):
        verdict = verify_rendition(fake, Claim.of(r), source, rng=random.Random(seed))
        assert _failed(verdict.reasons) == {"content"}, verdict.reasons
        assert "1 of" in verdict.reasons[0]


def test_sampled_frames_come_from_the_checkers_randomness(renditions: dict[str, Rendition]) -> None:
    data = renditions["360p"].data
    draws = {tuple(sample_keys([data], 4, random.Random(seed))) for seed in range(20)}
    assert len(draws) > 10  # not a fixed set a transcoder could keep right
    assert sample_keys([data], 4, random.Random(7)) == sample_keys([data], 4, random.Random(7))
    assert all(len(d) == 4 for d in draws)
