"""Frame-rate capping by frame selection, stateless so that segment boundaries never change it."""

from __future__ import annotations

import math
from fractions import Fraction


def keeps_frame(time: Fraction, source_frame_duration: Fraction, fps_cap: Fraction | None) -> bool:
    """True when the source frame shown during [time, time + duration) carries an output tick.

    Output ticks sit at k / fps_cap; a frame is kept iff one falls in its display interval, so
    the choice depends only on the frame's own timestamp and is the same however the stream is cut.
    """
    if fps_cap is None or source_frame_duration <= 0 or 1 / source_frame_duration <= fps_cap:
        return True
    tick = math.ceil(time * fps_cap)
    return Fraction(tick) / fps_cap < time + source_frame_duration


def capped_rate(source_rate: Fraction, fps_cap: Fraction | None) -> Fraction:
    """The nominal frame rate of a rendition of a `source_rate` source under `fps_cap`."""
    if fps_cap is None or source_rate <= fps_cap:
        return source_rate
    return fps_cap
