"""Which transcoded segments a gateway decodes and scores in full, and which get only the cheap
checks (signature, job, pixel claim, sizes, packet count and timestamps read from the container).

`all` checks every segment in full. `sample` (the default) checks in full: each orchestrator's
first `FIRST_FULL` segments, every segment of an orchestrator after any check of it failed, and
otherwise a share `fraction` of segments drawn from the OS's randomness (`secrets`) after the
result arrived, independently per orchestrator, so nothing it sees tells it which segment will be
scored. The odds are in docs/verification.md."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

POLICIES = ("sample", "all")
FIRST_FULL = 2  # a new orchestrator's first segments are always checked in full
DRAW_SCALE = 1 << 32


@dataclass(slots=True)
class _Record:
    segments: int = 0  # results checked, full or cheap
    full: int = 0
    distrusted: bool = False


class VerifyPolicy:
    """Per-orchestrator draws; thread-safe (checks run in worker threads)."""

    def __init__(
        self,
        policy: str = "sample",
        fraction: Fraction | float = Fraction(1, 8),
        draw: Callable[[bytes, int], bool] | None = None,
    ) -> None:
        """`draw(orchestrator, index)` says whether that orchestrator's result number `index`
        (from 0) past its first ones is checked in full; by default a draw from `secrets` that
        says yes with probability `fraction` (tests pass their own)."""
        if policy not in POLICIES:
            raise ValueError(f"verify policy {policy!r}: one of {', '.join(POLICIES)}")
        share = Fraction(fraction).limit_denominator(DRAW_SCALE)
        if not 0 <= share <= 1:
            raise ValueError(f"verify fraction {fraction} is a share of segments, 0..1")
        self.policy, self.fraction = policy, share
        self._threshold = int(share * DRAW_SCALE)
        self._draw = draw or self._secret_draw
        self._records: dict[bytes, _Record] = {}
        self._lock = threading.Lock()

    def full_check(self, orchestrator: bytes) -> bool:
        """Whether this result from `orchestrator` is decoded and scored in full (drawn now)."""
        with self._lock:
            record = self._records.setdefault(orchestrator, _Record())
            full = (
                self.policy == "all"
                or record.distrusted
                or record.segments < FIRST_FULL
                or self._draw(orchestrator, record.segments)
            )
            record.segments += 1
            record.full += full
            return full

    def _secret_draw(self, orchestrator: bytes, index: int) -> bool:
        return secrets.randbelow(DRAW_SCALE) < self._threshold

    def failed(self, orchestrator: bytes) -> None:
        """A check of `orchestrator` failed: every later result of it is checked in full."""
        with self._lock:
            self._records.setdefault(orchestrator, _Record()).distrusted = True

    def distrusted(self, orchestrator: bytes) -> bool:
        with self._lock:
            record = self._records.get(orchestrator)
            return record is not None and record.distrusted

    def counts(self, orchestrator: bytes) -> tuple[int, int]:
        """(results checked, of which in full) for `orchestrator`."""
        with self._lock:
            record = self._records.get(orchestrator, _Record())
            return record.segments, record.full
