"""HLS playlist text (RFC 8216): rendering master and media playlists, and reading them back."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import m3u8

from media.errors import InvalidPlaylist

VERSION = 3


@dataclass(frozen=True, slots=True)
class PlaylistEntry:
    """One media segment as a playlist lists it."""

    uri: str
    duration: float
    discontinuity: bool = False  # EXT-X-DISCONTINUITY before it (e.g. after a skipped segment)


@dataclass(frozen=True, slots=True)
class Variant:
    """One rendition as the master playlist advertises it."""

    uri: str
    bandwidth: int
    average_bandwidth: int
    width: int
    height: int
    frame_rate: float
    codecs: str | None


def target_duration(durations: Sequence[float]) -> int:
    """EXT-X-TARGETDURATION: every EXTINF, rounded to the nearest integer, must not exceed it."""
    return max(1, *(math.ceil(d - 1e-3) for d in durations)) if durations else 1


def render_media_playlist(
    entries: Sequence[PlaylistEntry],
    *,
    media_sequence: int = 0,
    target: int | None = None,
    vod: bool = True,
    ended: bool = True,
    discontinuity_sequence: int = 0,
) -> str:
    """A media playlist; `vod` adds PLAYLIST-TYPE:VOD, `ended` the EXT-X-ENDLIST tag."""
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{target or target_duration([e.duration for e in entries])}",
        f"#EXT-X-MEDIA-SEQUENCE:{media_sequence}",
    ]
    if discontinuity_sequence:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}")
    if vod:
        lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
    for entry in entries:
        if entry.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        lines += [f"#EXTINF:{entry.duration:.6f},", entry.uri]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def render_master_playlist(variants: Sequence[Variant]) -> str:
    """The master playlist listing every rendition's media playlist."""
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for v in variants:
        attrs = [
            f"BANDWIDTH={v.bandwidth}",
            f"AVERAGE-BANDWIDTH={v.average_bandwidth}",
            f"RESOLUTION={v.width}x{v.height}",
            f"FRAME-RATE={v.frame_rate:.3f}",
        ]
        if v.codecs:
            attrs.append(f'CODECS="{v.codecs}"')
        lines += ["#EXT-X-STREAM-INF:" + ",".join(attrs), v.uri]
    return "\n".join(lines) + "\n"


def codecs_attribute(
    video_codec: str,
    profile: str | None,
    level: int,
    audio_codec: str | None,
    audio_profile: str | None,
) -> str | None:
    """The RFC 6381 CODECS value for H.264 (+ audio), or None when it cannot be named exactly."""
    avc = _AVC_PROFILES.get(profile or "")
    if video_codec != "h264" or avc is None or level <= 0:
        return None
    parts = [f"avc1.{avc}{level:02X}"]
    if audio_codec is not None:
        audio = _AUDIO.get((audio_codec, audio_profile)) or _AUDIO.get((audio_codec, None))
        if audio is None:
            return None
        parts.append(audio)
    return ",".join(parts)


# profile_idc and constraint-flag bytes (ISO/IEC 14496-10 A.2)
_AVC_PROFILES = {
    "Constrained Baseline": "42E0",
    "Baseline": "4200",
    "Main": "4D40",
    "High": "6400",
}
_AUDIO = {
    ("aac", "LC"): "mp4a.40.2",
    ("aac", "HE-AAC"): "mp4a.40.5",
    ("aac", "HE-AACv2"): "mp4a.40.29",
    ("mp3", None): "mp4a.40.34",
    ("ac3", None): "ac-3",
    ("eac3", None): "ec-3",
}


def read_master(path: Path) -> list[Variant]:
    """The variants of a master playlist on disk, URIs relative to its folder."""
    playlist = _load(path)
    if not playlist.is_variant:
        raise InvalidPlaylist(f"{path}: not a master playlist")
    variants = []
    for p in playlist.playlists:
        info = p.stream_info
        width, height = info.resolution or (0, 0)
        variants.append(
            Variant(
                uri=p.uri,
                bandwidth=info.bandwidth or 0,
                average_bandwidth=info.average_bandwidth or 0,
                width=width,
                height=height,
                frame_rate=info.frame_rate or 0.0,
                codecs=info.codecs,
            )
        )
    if not variants:
        raise InvalidPlaylist(f"{path}: master playlist lists no variants")
    return variants


def read_media(path: Path) -> tuple[list[PlaylistEntry], bool]:
    """A media playlist's segments and whether it is complete (EXT-X-ENDLIST)."""
    playlist = _load(path)
    if playlist.is_variant:
        raise InvalidPlaylist(f"{path}: expected a media playlist, found a master playlist")
    entries = [
        PlaylistEntry(s.uri, float(s.duration), bool(s.discontinuity)) for s in playlist.segments
    ]
    return entries, bool(playlist.is_endlist)


def _load(path: Path) -> m3u8.M3U8:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidPlaylist(f"{path}: cannot read playlist: {exc}") from exc
    if not text.startswith("#EXTM3U"):
        raise InvalidPlaylist(f"{path}: not an HLS playlist (no #EXTM3U)")
    try:
        return m3u8.loads(text)
    except Exception as exc:  # m3u8 raises assorted built-in errors on malformed attributes
        raise InvalidPlaylist(f"{path}: malformed playlist: {exc}") from exc
