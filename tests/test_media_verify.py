"""Verifying one rendition against its source segment: right passes, each kind of wrong fails."""

from __future__ import annotations

import dataclasses
import io

import av
import pytest

from media.profiles import parse_profiles
from media.transcoder import Rendition, transcode
from media.verify import Claim, verify_rendition, verify_renditions
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


def test_different_content_fails_on_quality_alone(source: bytes) -> None:
    # same size, frame count, timestamps and audio: only the pictures differ
    other = ts_bytes(video_file("verify_other.mp4", size="640x360", duration=1, audio="aac",
                                pattern="testsrc"))  # fmt: skip
    (wrong,) = transcode(other, parse_profiles("240p"), preset="veryfast").renditions
    verdict = verify_rendition(wrong.data, Claim.of(wrong), source)
    assert not verdict.ok
    assert _failed(verdict.reasons) == {"quality"}
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
    together = verify_renditions(items, source)
    alone = [verify_rendition(data, claim, source, name=name) for data, claim, name in items]
    assert [v.name for v in together] == [*renditions, "240p-liar"]
    assert [v.ok for v in together] == [True, True, True, False]
    for a, b in zip(together, alone, strict=True):
        assert (a.reasons, a.frames, a.psnr, a.ssim) == (b.reasons, b.frames, b.psnr, b.ssim)
