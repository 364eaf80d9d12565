"""Progress reports from long media work, delivered through a plain callback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a transcode has got: frames decoded and media seconds covered so far."""

    frames: int
    seconds: float
    total_seconds: float | None

    @property
    def fraction(self) -> float | None:
        """Done share in 0..1, or None when the input's length is unknown (live)."""
        if not self.total_seconds:
            return None
        return min(1.0, self.seconds / self.total_seconds)


ProgressCallback = Callable[[Progress], None]
