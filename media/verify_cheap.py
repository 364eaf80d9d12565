"""The cheap check of renditions: what a container says without decoding a frame (declared
size, packet count and timestamps, audio packets) against the claim and the source. A few
milliseconds a rendition; the pictures themselves are left to the sampled full check
(media.verify)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av

from media.errors import InvalidInput, MediaError
from media.rendition_checks import (
    TICKS,
    Check,
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
from media.source import Source, describe, frame_rate, open_input


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
                    keys.append(frame_key(packet.pts, packet.time_base))
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
    src = SourceScan(src_packets.width, src_packets.height, src_packets.keys, step,
                      src_packets.has_audio, {}, {})  # fmt: skip
    out = []
    for data, claim, name in renditions:
        got = _demux_video(data)
        scan = Scan(keys=got.keys, has_audio=got.has_audio)
        if got.width and got.height:
            scan.sizes.add((got.width, got.height))
        if got.error:
            scan.errors.append(got.error)
        size = (claim.width, claim.height)
        expected = expected_keys(src, claim.frame_rate)
        checks = [
            claim_check(claim, scan),
            Check("demuxes", not scan.errors and bool(scan.keys),
                  "; ".join(scan.errors) or f"{len(scan.keys)} packets"),
            size_check(scan, size, src),
            Check("frames", len(scan.keys) == len(expected),
                  f"{len(scan.keys)} packets, the source gives {len(expected)} frames"),
            timing_check(scan.keys, expected, step),
            Check("audio", scan.has_audio or not src.has_audio,
                  "present" if scan.has_audio else ("missing" if src.has_audio else "none")),
        ]  # fmt: skip
        frames = len(scan.keys)
        duration = float(Fraction(scan.keys[-1] - scan.keys[0], TICKS) + step) if frames else 0.0
        out.append(Verdict(name, tuple(checks), claim.width, claim.height, frames, duration,
                           None, None))  # fmt: skip
    return out
