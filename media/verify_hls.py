"""Verifying a whole HLS output tree (as `castnet media transcode` writes it) against its source."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path, PurePosixPath

from media.hls import MASTER
from media.playlists import PlaylistEntry, read_master, read_media
from media.source import Source
from media.verify import (
    MAX_THUMB_MAE,
    MIN_PSNR,
    MIN_SSIM,
    SAMPLES,
    TICKS,
    Check,
    Verdict,
    judge,
    sample_keys,
    scan_rendition,
    scan_source,
)


@dataclass(frozen=True, slots=True)
class HlsVerdict:
    """One verdict per rendition listed in the master playlist."""

    root: str
    renditions: tuple[Verdict, ...]

    @property
    def ok(self) -> bool:
        return bool(self.renditions) and all(v.ok for v in self.renditions)

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(f"{v.name}: {r}" for v in self.renditions for r in v.reasons)


def verify_hls(
    root: Path,
    source: Source,
    *,
    source_format: str | None = None,
    samples: int = SAMPLES,
    min_psnr: float = MIN_PSNR,
    min_ssim: float = MIN_SSIM,
    max_thumb_mae: float = MAX_THUMB_MAE,
) -> HlsVerdict:
    """Check every rendition of `root/master.m3u8`; `InvalidPlaylist` if it cannot be read."""
    variants = read_master(root / MASTER)
    plans = []
    wanted: dict[tuple[int, int], set[int]] = {}
    for variant in variants:
        playlist = root / variant.uri
        entries, ended = read_media(playlist)
        files = [playlist.parent / e.uri for e in entries]
        present = [f for f in files if f.is_file()]
        keys = sample_keys(present, samples)
        wanted.setdefault((variant.width, variant.height), set()).update(keys)
        plans.append((variant, entries, ended, files, present, scan_rendition(present, set(keys))))
    src = scan_source(source, source_format, wanted)
    source_rate = 1 / src.frame_duration
    verdicts = []
    for variant, entries, ended, files, present, scan in plans:
        cap = Fraction(variant.frame_rate).limit_denominator(1001) if variant.frame_rate else None
        fps_cap = cap if cap is not None and cap < source_rate - Fraction(1, 100) else None
        missing = [f.name for f in files if f not in present]
        checks = [
            Check(
                "playlist",
                bool(entries) and ended and not missing,
                f"{len(entries)} segments"
                + ("" if ended else ", no EXT-X-ENDLIST")
                + (f", missing {', '.join(missing)}" if missing else ""),
            ),
            _durations_check(entries, scan.chunk_starts, scan.keys, fps_cap or source_rate),
        ]
        name = str(PurePosixPath(variant.uri).parent)
        verdicts.append(judge(name, scan, src, (variant.width, variant.height), fps_cap, checks,
                              min_psnr, min_ssim, max_thumb_mae))  # fmt: skip
    return HlsVerdict(str(root), tuple(verdicts))


def _durations_check(
    entries: list[PlaylistEntry], starts: list[int], keys: list[int], rate: Fraction
) -> Check:
    """Each EXTINF must match its segment's measured span within one frame."""
    if len(starts) != len(entries) or not keys:
        return Check(
            "durations", False, f"{len(entries)} EXTINF entries, {len(starts)} decodable segments"
        )
    ends = [*starts[1:], keys[-1] + round(TICKS / rate)]
    spans = [(end - start) / TICKS for start, end in zip(starts, ends, strict=True)]
    off = [
        f"{e.uri}: EXTINF {e.duration:.3f} s, measured {s:.3f} s"
        for e, s in zip(entries, spans, strict=True)
        if abs(e.duration - s) > 1 / rate
    ]
    total = sum(e.duration for e in entries)
    return Check("durations", not off, "; ".join(off) or f"{len(entries)} segments, {total:.3f} s")
