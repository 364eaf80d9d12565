"""Checking renditions against their source: size, frame count, timing, audio, claimed pixels, every
frame's content at thumbnail scale, and sampled quality (PSNR/SSIM against the source scaled down
with Lanczos) on frames drawn at random when the check runs. A verdict lists reasons.

What a transcoder cannot predict is what keeps it honest: the sampled frames come from the caller's
`rng` (by default the OS's randomness), drawn after the rendition exists, and the thumbnail check
looks at every frame, so keeping "the frames that will be scored" right and faking the rest fails.
The odds are worked out in docs/verification.md."""

from __future__ import annotations

import bisect
import io
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from media.cadence import keeps_frame
from media.errors import InvalidInput, MediaError
from media.quality import Plane, psnr, ssim
from media.source import Source, describe, frame_rate, open_input, video_stream
from media.transcoder import Rendition

TICKS = 90_000  # frames are matched by timestamp in 90 kHz units, MPEG-TS's clock
MIN_PSNR = 30.0  # right renditions measure 35-45 dB; a frame from elsewhere in the clip ~12-22 dB
MIN_SSIM = 0.80
SAMPLES = 4
THUMB_SIZE = (32, 18)  # area-averaged luma: encoding noise averages out, the picture does not
# Mean absolute difference of a frame's thumbnail from its source frame's, in 8-bit luma levels.
# Measured: right renditions 0.1-0.8; a frame 5 frames off ~5; a black or foreign frame 50-110.
MAX_THUMB_MAE = 4.0
Chunk = bytes | Path


@dataclass(frozen=True, slots=True)
class Claim:
    """What a transcoder says it produced for one rendition."""

    width: int
    height: int
    frame_count: int
    pixel_count: int
    frame_rate: Fraction | None = None

    @classmethod
    def of(cls, rendition: Rendition) -> Claim:
        return cls(
            rendition.width,
            rendition.height,
            rendition.frame_count,
            rendition.pixel_count,
            rendition.frame_rate,
        )


@dataclass(frozen=True, slots=True)
class Check:
    """One named test of a rendition and what it found."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome for one rendition: every check, with the measurements behind them."""

    name: str
    checks: tuple[Check, ...]
    width: int
    height: int
    frames: int
    duration: float
    psnr: float | None
    ssim: float | None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why it failed (empty when it passed)."""
        return tuple(f"{c.name}: {c.detail}" for c in self.checks if not c.ok)

    @property
    def pixel_count(self) -> int:
        return self.frames * self.width * self.height


@dataclass(slots=True)
class _Scan:
    """What decoding a rendition (one or more MPEG-TS chunks) found."""

    keys: list[int] = field(default_factory=list)
    sizes: set[tuple[int, int]] = field(default_factory=set)
    planes: dict[int, Plane] = field(default_factory=dict)
    chunk_starts: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    has_audio: bool = False
    thumbs: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass(slots=True)
class _SourceScan:
    width: int
    height: int
    keys: list[int]
    frame_duration: Fraction
    has_audio: bool
    planes: dict[tuple[int, int, int], Plane]  # (width, height, key) -> scaled luma
    thumbs: dict[int, np.ndarray]  # key -> thumbnail of every source frame


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
    checks = [_claim_check(claim, scan)]
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

    def scan(index: int) -> _Scan:
        return scan_rendition([renditions[index][0]], set(keys[index]))

    with ThreadPoolExecutor(workers, thread_name_prefix="verify") as pool:
        scans = pool.map(scan, range(len(renditions)))
        src = scan_source(source, source_format, wanted)  # meanwhile, in this thread
        scanned = list(scans)

        def judged(index: int) -> Verdict:
            _, claim, name = renditions[index]
            checks = [_claim_check(claim, scanned[index])]
            size = (claim.width, claim.height)
            return judge(name, scanned[index], src, size, claim.frame_rate, checks,
                         min_psnr, min_ssim, max_thumb_mae)  # fmt: skip

        return list(pool.map(judged, range(len(renditions))))


def _claim_check(claim: Claim, scan: _Scan) -> Check:
    return Check(
        "claim",
        claim.frame_count == len(scan.keys)
        and claim.pixel_count == claim.frame_count * claim.width * claim.height,
        f"claimed {claim.frame_count} frames / {claim.pixel_count} pixels,"
        f" decoded {len(scan.keys)} frames of {claim.width}x{claim.height}"
        f" = {len(scan.keys) * claim.width * claim.height} pixels",
    )


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
                        _key(p.pts, p.time_base)
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


def scan_rendition(chunks: Sequence[Chunk], wanted: set[int]) -> _Scan:
    """Decode every chunk in order, keeping the luma of the frames whose timestamp is wanted."""
    scan = _Scan()
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
                        key = _key(frame.pts, frame.time_base)
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
) -> _SourceScan:
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
                key = _key(frame.pts, frame.time_base)
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
        return _SourceScan(
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
    scan: _Scan,
    src: _SourceScan,
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
    checks.append(_size_check(scan, size, src))
    step = src.frame_duration
    expected = [k for k in src.keys if keeps_frame(Fraction(k, TICKS), step, fps_cap)]
    counted = f"decoded {len(scan.keys)}, the source gives {len(expected)}"
    checks.append(Check("frames", len(scan.keys) == len(expected), counted))
    checks.append(_timing_check(scan.keys, expected, src.frame_duration))
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


def _scores(scan: _Scan, src: _SourceScan, size: tuple[int, int]) -> list[tuple[float, float]]:
    """(PSNR, SSIM) of every sampled frame that has its scaled source frame."""
    width, height = size
    return [
        (psnr(src.planes[(width, height, k)], plane), ssim(src.planes[(width, height, k)], plane))
        for k, plane in sorted(scan.planes.items())
        if (width, height, k) in src.planes and plane.shape == (height, width)
    ]


def _content_check(scan: _Scan, src: _SourceScan, max_mae: float) -> Check:
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


def _size_check(scan: _Scan, size: tuple[int, int], src: _SourceScan) -> Check:
    width, height = size
    if scan.sizes - {size}:
        found = ", ".join(f"{w}x{h}" for w, h in sorted(scan.sizes))
        return Check("resolution", False, f"frames are {found}, expected {width}x{height}")
    sw, sh = src.width, src.height
    if width > sw or height > sh:
        return Check("resolution", False, f"{width}x{height} upscales the {sw}x{sh} source")
    if abs(width - height * sw / sh) > 2 and abs(height - width * sh / sw) > 2:
        return Check("resolution", False, f"{width}x{height} distorts the {sw}x{sh} aspect ratio")
    return Check("resolution", True, f"{width}x{height} from {sw}x{sh}")


def _timing_check(keys: list[int], expected: list[int], frame_duration: Fraction) -> Check:
    if not keys or not expected:
        return Check("timing", False, "no frames to time")
    tolerance = 1  # 90 kHz rounding of source timestamps
    starts_ok = abs(keys[0] - expected[0]) <= tolerance
    ends_ok = abs(keys[-1] - expected[-1]) <= tolerance
    stray = [k for k in keys if not _near(k, expected)]
    span = float(Fraction(keys[-1] - keys[0], TICKS) + frame_duration)
    want = float(Fraction(expected[-1] - expected[0], TICKS) + frame_duration)
    ok = starts_ok and ends_ok and not stray
    detail = (
        f"spans {span:.3f} s from {keys[0] / TICKS:.3f} s;"
        f" source {want:.3f} s from {expected[0] / TICKS:.3f} s"
    )
    if stray:
        detail += f"; {len(stray)} frames at timestamps the source does not have"
    return Check("timing", ok, detail)


def _near(key: int, expected: list[int]) -> bool:
    i = bisect.bisect_left(expected, key - 1)
    return i < len(expected) and abs(expected[i] - key) <= 1


def _key(pts: int | None, time_base: Fraction | None) -> int:
    if pts is None or time_base is None:
        return -1
    return round(pts * time_base * TICKS)


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


@dataclass(frozen=True, slots=True)
class _Packets:
    """What a container says of its video without decoding it: the size its stream declares,
    every video packet's timestamp, and whether it carries audio packets."""

    width: int
    height: int
    keys: list[int]
    has_audio: bool
    frame_duration: Fraction | None
    error: str = ""


def _demux_video(data: Source) -> _Packets:
    """Read a container's packets (no decoding): sizes come from the stream's parameters."""
    try:
        with open_input(data) as container:
            if not container.streams.video:
                return _Packets(0, 0, [], False, None, "no video stream")
            stream = container.streams.video[0]
            audio = container.streams.audio[0] if container.streams.audio else None
            keys, has_audio = [], False
            for packet in container.demux([s for s in (stream, audio) if s is not None]):
                if packet.stream is audio:
                    has_audio = has_audio or bool(packet.size)
                elif packet.pts is not None and packet.size:
                    keys.append(_key(packet.pts, packet.time_base))
            ctx = stream.codec_context
            return _Packets(ctx.width, ctx.height, sorted(keys), has_audio, 1 / frame_rate(stream))
    except (MediaError, av.FFmpegError, OSError) as exc:
        return _Packets(0, 0, [], False, None, f"does not open: {exc}")


def cheap_verdicts(renditions: Sequence[tuple[bytes, Claim, str]], source: Source) -> list[Verdict]:
    """The checks that need no decoding, on every rendition of one source segment: the declared
    size against the claim and the source (no upscaling, aspect kept), the packet count against
    the claim and the source's frames (with the rendition's frame-rate cap), the timestamps
    against the source's, audio present when the source has it. A few milliseconds a rendition;
    what it cannot see (the pictures themselves) is left to the sampled full check."""
    src_packets = _demux_video(source)
    if src_packets.error or src_packets.frame_duration is None:
        raise InvalidInput(f"{describe(source)}: {src_packets.error or 'no frame rate'}")
    step = src_packets.frame_duration
    src = _SourceScan(src_packets.width, src_packets.height, src_packets.keys, step,
                      src_packets.has_audio, {}, {})  # fmt: skip
    out = []
    for data, claim, name in renditions:
        got = _demux_video(data)
        scan = _Scan(keys=got.keys, has_audio=got.has_audio)
        if got.width and got.height:
            scan.sizes.add((got.width, got.height))
        if got.error:
            scan.errors.append(got.error)
        size = (claim.width, claim.height)
        expected = [k for k in src.keys if keeps_frame(Fraction(k, TICKS), step, claim.frame_rate)]
        checks = [
            _claim_check(claim, scan),
            Check("demuxes", not scan.errors and bool(scan.keys),
                  "; ".join(scan.errors) or f"{len(scan.keys)} packets"),
            _size_check(scan, size, src),
            Check("frames", len(scan.keys) == len(expected),
                  f"{len(scan.keys)} packets, the source gives {len(expected)} frames"),
            _timing_check(scan.keys, expected, step),
            Check("audio", scan.has_audio or not src.has_audio,
                  "present" if scan.has_audio else ("missing" if src.has_audio else "none")),
        ]  # fmt: skip
        frames = len(scan.keys)
        duration = float(Fraction(scan.keys[-1] - scan.keys[0], TICKS) + step) if frames else 0.0
        out.append(Verdict(name, tuple(checks), claim.width, claim.height, frames, duration,
                           None, None))  # fmt: skip
    return out
