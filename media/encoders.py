"""Choosing a video encoder: software x264/x265 by default, NVENC only when it really opens."""

from __future__ import annotations

import functools
from fractions import Fraction

import av

from media.errors import EncoderUnavailable

X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
)  # fmt: skip
SOFTWARE = {"h264": "libx264", "hevc": "libx265"}
HARDWARE = {"h264": ("h264_nvenc",), "hevc": ("hevc_nvenc",)}
# NVENC's p1 (fastest) .. p7 (best), matched to x264's names.
_NVENC_PRESET = dict(
    zip(X264_PRESETS, ("p1", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p7"), strict=True)
)


def check_preset(preset: str) -> str:
    """Validate an x264-style preset name (the one vocabulary castnet speaks)."""
    if preset not in X264_PRESETS:
        raise EncoderUnavailable(f"unknown preset {preset!r}; use one of {', '.join(X264_PRESETS)}")
    return preset


def choose_encoder(codec: str, prefer: str = "software") -> str:
    """The encoder for `codec`: "software", "auto" (hardware when it opens) or an encoder name."""
    if prefer not in ("software", "auto"):
        if not encoder_works(prefer):
            raise EncoderUnavailable(f"encoder {prefer!r} is not usable here")
        return prefer
    if prefer == "auto":
        for name in HARDWARE.get(codec, ()):
            if encoder_works(name):
                return name
    name = SOFTWARE.get(codec)
    if name is None or not encoder_works(name):
        raise EncoderUnavailable(f"no encoder for codec {codec!r} in this PyAV build")
    return name


@functools.cache
def encoder_works(name: str) -> bool:
    """True when `name` is compiled in and opens (hardware ones also need a device and driver)."""
    if name not in av.codecs_available:
        return False
    try:
        context = av.CodecContext.create(name, "w")
        context.width, context.height, context.pix_fmt = 256, 144, "yuv420p"
        context.time_base = Fraction(1, 30)
        if name == "libx265":
            context.options = {"x265-params": "log-level=error"}
        context.open()
    except (av.FFmpegError, ValueError, OSError):
        return False
    return True


def encoder_options(encoder: str, preset: str) -> dict[str, str]:
    """Options that make an encoder honour castnet's keyframe placement at the given preset."""
    check_preset(preset)
    if encoder == "libx264":
        # sc_threshold=0: no scene-cut keyframes; forced-idr: a frame marked I becomes an IDR.
        return {"preset": preset, "sc_threshold": "0", "forced-idr": "1"}
    if encoder == "libx265":
        return {"preset": preset, "x265-params": "scenecut=0:log-level=error", "forced-idr": "1"}
    if encoder.endswith("_nvenc"):
        return {"preset": _NVENC_PRESET[preset], "forced-idr": "1"}
    return {}
