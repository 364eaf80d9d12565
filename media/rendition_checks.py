"""What checking a rendition speaks of, for the cheap check (media.verify_cheap) and the full
one (media.verify) alike: the claim a transcoder makes, a check and a verdict, what a scan of a
rendition or its source found, and the checks both make from timestamps and sizes alone."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from media.cadence import keeps_frame
from media.quality import Plane
from media.transcoder import Rendition

TICKS = 90_000  # frames are matched by timestamp in 90 kHz units, MPEG-TS's clock


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
class Scan:
    """What decoding a rendition (one or more MPEG-TS chunks) found."""

    keys: list[int] = field(default_factory=list)
    sizes: set[tuple[int, int]] = field(default_factory=set)
    planes: dict[int, Plane] = field(default_factory=dict)
    chunk_starts: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    has_audio: bool = False
    thumbs: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass(slots=True)
class SourceScan:
    width: int
    height: int
    keys: list[int]
    frame_duration: Fraction
    has_audio: bool
    planes: dict[tuple[int, int, int], Plane]  # (width, height, key) -> scaled luma
    thumbs: dict[int, np.ndarray]  # key -> thumbnail of every source frame


def claim_check(claim: Claim, scan: Scan) -> Check:
    return Check(
        "claim",
        claim.frame_count == len(scan.keys)
        and claim.pixel_count == claim.frame_count * claim.width * claim.height,
        f"claimed {claim.frame_count} frames / {claim.pixel_count} pixels,"
        f" decoded {len(scan.keys)} frames of {claim.width}x{claim.height}"
        f" = {len(scan.keys) * claim.width * claim.height} pixels",
    )


def size_check(scan: Scan, size: tuple[int, int], src: SourceScan) -> Check:
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


def timing_check(keys: list[int], expected: list[int], frame_duration: Fraction) -> Check:
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


def frame_key(pts: int | None, time_base: Fraction | None) -> int:
    if pts is None or time_base is None:
        return -1
    return round(pts * time_base * TICKS)


def expected_keys(src: SourceScan, fps_cap: Fraction | None) -> list[int]:
    """The source's frames (their timestamps) that a rendition capped at `fps_cap` keeps."""
    step = src.frame_duration
    return [k for k in src.keys if keeps_frame(Fraction(k, TICKS), step, fps_cap)]
