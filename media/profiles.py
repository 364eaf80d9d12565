"""Rendition profiles (the ABR ladder) and how each one is fitted to a given source."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from media.errors import InvalidProfile

CODECS = ("h264", "hevc")
MIN_BITRATE = 16_000
MAX_BITRATE = 200_000_000


@dataclass(frozen=True, slots=True)
class Profile:
    """A named rung of the ladder: `height` is the short side, `fps` a cap (None: the source's)."""

    name: str
    height: int
    bitrate: int
    fps: Fraction | None = None
    codec: str = "h264"

    def __post_init__(self) -> None:
        if not 16 <= self.height <= 4320 or self.height % 2:
            raise InvalidProfile(f"{self.name}: height {self.height} must be even, 16..4320")
        if not MIN_BITRATE <= self.bitrate <= MAX_BITRATE:
            raise InvalidProfile(f"{self.name}: bitrate {self.bitrate} outside 16k..200M")
        if self.fps is not None and not 1 <= self.fps <= 240:
            raise InvalidProfile(f"{self.name}: fps {self.fps} outside 1..240")
        if self.codec not in CODECS:
            raise InvalidProfile(f"{self.name}: codec {self.codec!r} not one of {CODECS}")


@dataclass(frozen=True, slots=True)
class RenditionSpec:
    """A profile fitted to one source: the exact frame size and frame-rate cap to encode."""

    profile: Profile
    width: int
    height: int

    @property
    def name(self) -> str:
        return self.profile.name


# Bitrates follow go-livepeer's ffmpeg/videoprofile.go presets (P1080p30fps16x9 ... P144p30fps16x9).
STANDARD: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("1080p", 1080, 6_000_000),
        Profile("720p", 720, 4_000_000),
        Profile("576p", 576, 1_500_000),
        Profile("480p", 480, 1_600_000),
        Profile("360p", 360, 1_200_000),
        Profile("240p", 240, 600_000),
        Profile("144p", 144, 400_000),
    )
}
DEFAULT_LADDER: tuple[Profile, ...] = (STANDARD["720p"], STANDARD["480p"], STANDARD["360p"])

# "720p", "720p30", "480p:800k", "360p30:1.2M", "720p/hevc"
_ITEM = re.compile(
    r"^(?P<height>\d+)p(?P<fps>\d+(?:\.\d+)?)?"
    r"(?::(?P<rate>\d+(?:\.\d+)?)(?P<unit>[kKmM]?))?"
    r"(?:/(?P<codec>[a-z0-9]+))?$"
)


def parse_profiles(text: str) -> tuple[Profile, ...]:
    """Parse a ladder such as "720p,480p:800k,360p30"; non-standard heights need a bitrate."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or not all(items):
        raise InvalidProfile(f"empty profile in {text!r}")
    profiles = tuple(_parse_item(item) for item in items)
    names = [p.name for p in profiles]
    if len(set(names)) != len(names):
        raise InvalidProfile(f"duplicate profile in {text!r}")
    return profiles


def _parse_item(item: str) -> Profile:
    match = _ITEM.match(item)
    if match is None:
        raise InvalidProfile(
            f"cannot parse profile {item!r} (expected e.g. 720p, 720p30, 480p:800k)"
        )
    height = int(match["height"])
    base = STANDARD.get(f"{height}p")
    if match["rate"] is not None:
        scale = {"": 1, "k": 1_000, "m": 1_000_000}[match["unit"].lower()]
        bitrate = round(float(match["rate"]) * scale)
    elif base is not None:
        bitrate = base.bitrate
    else:
        raise InvalidProfile(
            f"profile {item!r}: no standard bitrate for {height}p, give one (:1.5M)"
        )
    fps = Fraction(match["fps"]).limit_denominator(1001) if match["fps"] else None
    return Profile(item, height, bitrate, fps, match["codec"] or "h264")


def fit(profile: Profile, source_width: int, source_height: int) -> RenditionSpec:
    """Size a profile for a source: keep its aspect ratio, never exceed it, even dimensions."""
    short, long_ = sorted((source_width, source_height))
    target_short = min(profile.height, short - short % 2)
    target_long = min(long_ - long_ % 2, max(2, round(long_ * target_short / short / 2) * 2))
    if source_width >= source_height:
        return RenditionSpec(profile, target_long, target_short)
    return RenditionSpec(profile, target_short, target_long)


def plan_ladder(
    profiles: tuple[Profile, ...], source_width: int, source_height: int
) -> tuple[RenditionSpec, ...]:
    """Fit every profile to the source; a rung clamped onto an earlier rung's size is dropped."""
    if not profiles:
        raise InvalidProfile("the ladder needs at least one profile")
    short = min(source_width, source_height)
    kept: list[RenditionSpec] = []
    for profile in profiles:
        spec = fit(profile, source_width, source_height)
        same = [
            k
            for k in kept
            if (k.width, k.height, k.profile.fps, k.profile.codec)
            == (spec.width, spec.height, profile.fps, profile.codec)
        ]
        # two rungs asked for at the same size (e.g. two bitrates) both stay
        if any(profile.height > short or k.profile.height > short for k in same):
            continue
        kept.append(spec)
    return tuple(kept)
