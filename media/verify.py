"""Checking renditions against their source: size, frame count, timing, audio, claimed pixels, every
frame's content at thumbnail scale, and sampled quality (PSNR/SSIM against the source scaled down
with Lanczos) on frames drawn at random when the check runs. A verdict lists reasons.

What a transcoder cannot predict is what keeps it honest: the sampled frames come from the caller's
`rng` (by default the OS's randomness), drawn after the rendition exists, and the thumbnail check
looks at every frame, so keeping "the frames that will be scored" right and faking the rest fails.
The odds are worked out in docs/verification.md.

This module holds the full check (decode, then score); the cheap one (no decoding) is
media.verify_cheap, and what both speak of (claims, checks, verdicts, scans)
media.rendition_checks."""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from media.errors import InvalidInput
from media.quality import Plane, psnr, ssim
from media.rendition_checks import (
    TICKS,
    Check,
    Chunk,
    Claim,
    Scan,
    SourceScan,
    Verdict,
    claim_check,
    expected_keys,
    frame_key,
    size_check,
    timing_check,
)
from media.source import Source, describe, frame_rate, open_input, video_stream
from media.verify_cheap import cheap_verdicts

# the checks' vocabulary and the cheap check stay importable from here, where callers found them
__all__ = ["MAX_THUMB_MAE", "MIN_PSNR", "MIN_SSIM", "SAMPLES", "TICKS", "Check", "Claim",
           "Verdict", "cheap_verdicts", "judge", "sample_keys", "scan_rendition", "scan_source",
           "verify_rendition", "verify_renditions"]  # fmt: skip

MIN_PSNR = 30.0  # right renditions measure 35-45 dB; a frame from elsewhere in the clip ~12-22 dB
MIN_SSIM = 0.80
SAMPLES = 4
THUMB_SIZE = (32, 18)  # area-averaged luma: encoding noise averages out, the picture does not
# Mean absolute difference of a frame's thumbnail from its source frame's, in 8-bit luma levels.
# Measured: right renditions 0.1-0.8; a frame 5 frames off ~5; a black or foreign frame 50-110.
MAX_THUMB_MAE = 4.0


def verify_rendition(
    data: bytes,
    claim: Claim,
    source: Source,
    *,
    name: str = "rendition",
    source_format: str | None = None,
    samples: int = SAMPLES,
    min_psnr: float = MIN_PSNR,
    min_ssim: float = MIN_SSIM,
    max_thumb_mae: float = MAX_THUMB_MAE,
    rng: random.Random | None = None,
) -> Verdict:
    """Verify one rendition's bytes (and the claim made for them) against the source segment."""
    keys = sample_keys([data], samples, rng)
    scan = scan_rendition([data], set(keys))
    wanted = {(claim.width, claim.height): set(keys)}
    src = scan_source(source, source_format, wanted)
    checks = [claim_check(claim, scan)]
    return judge(name, scan, src, (claim.width, claim.height), claim.frame_rate, checks,
                 min_psnr, min_ssim, max_thumb_mae)  # fmt: skip


def verify_renditions(
    renditions: Sequence[tuple[bytes, Claim, str]],
    source: Source,
    *,
    source_format: str | None = None,
    samples: int = SAMPLES,
    min_psnr: float = MIN_PSNR,
    min_ssim: float = MIN_SSIM,
    max_thumb_mae: float = MAX_THUMB_MAE,
    rng: random.Random | None = None,
) -> list[Verdict]:
    """Verify several renditions of one source segment, given as (bytes, claim, name): the
    source is decoded once for all of them and the renditions are decoded in parallel threads
    (PyAV releases the GIL), which is what a gateway checking a whole ladder needs."""
    keys = [sample_keys([data], samples, rng) for data, _, _ in renditions]
    wanted: dict[tuple[int, int], set[int]] = {}
    for (_, claim, _), ks in zip(renditions, keys, strict=True):
        wanted.setdefault((claim.width, claim.height), set()).update(ks)
    workers = max(1, min(len(renditions), 4))

    def scan(index: int) -> Scan:
        return scan_rendition([renditions[index][0]], set(keys[index]))

    with ThreadPoolExecutor(workers, thread_name_prefix="verify") as pool:
        scans = pool.map(scan, range(len(renditions)))
        src = scan_source(source, source_format, wanted)  # meanwhile, in this thread
        scanned = list(scans)

        def judged(index: int) -> Verdict:
            _, claim, name = renditions[index]
            checks = [claim_check(claim, scanned[index])]
            size = (claim.width, claim.height)
            return judge(name, scanned[index], src, size, claim.frame_rate, checks,
                         min_psnr, min_ssim, max_thumb_mae)  # fmt: skip

        return list(pool.map(judged, range(len(renditions))))


def sample_keys(
    chunks: Sequence[Chunk], samples: int, rng: random.Random | None = None
) -> list[int]:
    """Timestamps of `samples` frames of a rendition drawn at random (from packets, no decoding),
    from `rng` or the OS's randomness: the transcoder cannot know which frames will be scored."""
    keys: list[int] = []
    for chunk in chunks:
        try:
            with _open_chunk(chunk) as container:
                if container.streams.video:
                    stream = container.streams.video[0]
                    keys += [
                        frame_key(p.pts, p.time_base)
                        for p in container.demux(stream)
                        if p.pts is not None
                    ]
        except (InvalidInput, av.FFmpegError):
            continue  # scan_rendition reports it
    keys.sort()
    if not keys or samples <= 0:
        return []
    draw = rng if rng is not None else random.SystemRandom()
    return sorted(draw.sample(keys, min(samples, len(keys))))


def scan_rendition(chunks: Sequence[Chunk], wanted: set[int]) -> Scan:
    """Decode every chunk in order, keeping the luma of the frames whose timestamp is wanted."""
    scan = Scan()
    thumbnail = VideoReformatter()
    for index, chunk in enumerate(chunks):
        try:
            with _open_chunk(chunk) as container:
                if not container.streams.video:
                    scan.errors.append(f"chunk {index} has no video stream")
                    continue
                stream = container.streams.video[0]
                audio = container.streams.audio[0] if container.streams.audio else None
                first = True
                for packet in container.demux([s for s in (stream, audio) if s is not None]):
                    if packet.stream is audio:
                        scan.has_audio = scan.has_audio or bool(packet.size)
                        continue
                    for frame in packet.decode():
                        key = frame_key(frame.pts, frame.time_base)
                        if first:
                            scan.chunk_starts.append(key)
                            first = False
                        scan.keys.append(key)
                        scan.sizes.add((frame.width, frame.height))
                        scan.thumbs[key] = _thumb(thumbnail, frame)
                        if key in wanted:
                            scan.planes[key] = _luma(frame)
        except (InvalidInput, av.FFmpegError) as exc:
            scan.errors.append(f"chunk {index} does not decode: {exc}")
    return scan


def scan_source(
    source: Source, format: str | None, wanted: dict[tuple[int, int], set[int]]
) -> SourceScan:
    """Decode the source once: its frame timestamps, and Lanczos-scaled luma at the wanted ones."""
    name = describe(source)
    with open_input(source, format=format) as container:
        stream = video_stream(container, name)
        stream.thread_type = "AUTO"
        keys: list[int] = []
        planes: dict[tuple[int, int, int], Plane] = {}
        scalers = {size: VideoReformatter() for size in wanted}
        thumbnail = VideoReformatter()
        thumbs: dict[int, np.ndarray] = {}
        try:
            for frame in container.decode(stream):
                key = frame_key(frame.pts, frame.time_base)
                keys.append(key)
                thumbs[key] = _thumb(thumbnail, frame)
                for (width, height), want in wanted.items():
                    hit = next((k for k in (key, key - 1, key + 1) if k in want), None)
                    if hit is not None:
                        scaled = scalers[(width, height)].reformat(
                            frame, width, height, "yuv420p", interpolation=Interpolation.LANCZOS
                        )
                        planes[(width, height, hit)] = _luma(scaled)
        except av.FFmpegError as exc:
            raise InvalidInput(f"{name}: source does not decode: {exc}") from exc
        ctx = stream.codec_context
        return SourceScan(
            ctx.width,
            ctx.height,
            keys,
            1 / frame_rate(stream),
            bool(container.streams.audio),
            planes,
            thumbs,
        )


def judge(
    name: str,
    scan: Scan,
    src: SourceScan,
    size: tuple[int, int],
    fps_cap: Fraction | None,
    checks: list[Check],
    min_psnr: float,
    min_ssim: float,
    max_thumb_mae: float = MAX_THUMB_MAE,
) -> Verdict:
    """Turn a rendition scan and a source scan into a verdict."""
    width, height = size
    decoded = f"{len(scan.keys)} frames" if scan.keys else "no frames"
    checks.append(
        Check("decodes", not scan.errors and bool(scan.keys), "; ".join(scan.errors) or decoded)
    )
    checks.append(size_check(scan, size, src))
    expected = expected_keys(src, fps_cap)
    counted = f"decoded {len(scan.keys)}, the source gives {len(expected)}"
    checks.append(Check("frames", len(scan.keys) == len(expected), counted))
    checks.append(timing_check(scan.keys, expected, src.frame_duration))
    audio = "present" if scan.has_audio else ("missing" if src.has_audio else "none in source")
    checks.append(Check("audio", scan.has_audio or not src.has_audio, audio))
    checks.append(_content_check(scan, src, max_thumb_mae))
    scores = _scores(scan, src, size)
    checks.append(_quality_check(scores, min_psnr, min_ssim))
    low_psnr = min((p for p, _ in scores), default=None)
    low_ssim = min((s for _, s in scores), default=None)
    last_shown = (
        1 / fps_cap
        if fps_cap is not None and fps_cap < 1 / src.frame_duration
        else src.frame_duration
    )
    duration = (
        float(Fraction(scan.keys[-1] - scan.keys[0], TICKS) + last_shown) if scan.keys else 0.0
    )
    return Verdict(name, tuple(checks), width, height, len(scan.keys), duration, low_psnr, low_ssim)


def _scores(scan: Scan, src: SourceScan, size: tuple[int, int]) -> list[tuple[float, float]]:
    """(PSNR, SSIM) of every sampled frame that has its scaled source frame."""
    width, height = size
    return [
        (psnr(src.planes[(width, height, k)], plane), ssim(src.planes[(width, height, k)], plane))
        for k, plane in sorted(scan.planes.items())
        if (width, height, k) in src.planes and plane.shape == (height, width)
    ]


def _content_check(scan: Scan, src: SourceScan, max_mae: float) -> Check:
    """Every frame against its source frame at thumbnail scale: no frame may be faked."""
    differences = []
    for key, thumb in scan.thumbs.items():
        source = next((src.thumbs[k] for k in (key, key - 1, key + 1) if k in src.thumbs), None)
        if source is not None:
            differences.append((float(np.abs(thumb - source).mean()), key))
    if not differences:
        return Check("content", False, "no frame matched a source frame")
    bad = [(mae, key) for mae, key in differences if mae > max_mae]
    worst, at = max(differences)
    detail = f"worst frame differs by {worst:.1f} levels at {at / TICKS:.3f} s"
    if bad:
        detail = f"{len(bad)} of {len(differences)} frames differ from the source; " + detail
    return Check("content", not bad, detail + f" (<= {max_mae})")


def _quality_check(scores: list[tuple[float, float]], min_psnr: float, min_ssim: float) -> Check:
    if not scores:
        return Check("quality", False, "no sampled frame matched a source frame")
    low_psnr = min(p for p, _ in scores)
    low_ssim = min(s for _, s in scores)
    return Check(
        "quality",
        low_psnr >= min_psnr and low_ssim >= min_ssim,
        f"{len(scores)} samples: min PSNR {low_psnr:.2f} dB (>= {min_psnr}),"
        f" min SSIM {low_ssim:.4f} (>= {min_ssim})",
    )


def _thumb(reformatter: VideoReformatter, frame: av.VideoFrame) -> np.ndarray:
    width, height = THUMB_SIZE
    small = reformatter.reformat(frame, width, height, "gray", interpolation=Interpolation.AREA)
    return small.to_ndarray().astype(np.int16)


def _luma(frame: av.VideoFrame) -> Plane:
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    return frame.to_ndarray()[: frame.height]


def _open_chunk(chunk: Chunk) -> av.container.InputContainer:
    target = io.BytesIO(chunk) if isinstance(chunk, bytes) else str(chunk)
    try:
        return av.open(target)
    except (av.FFmpegError, OSError) as exc:
        raise InvalidInput(f"{describe(chunk)}: cannot open: {exc}") from exc
