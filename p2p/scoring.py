"""Per-peer penalties for invalid messages, decaying over time; past a threshold the peer is
banned (disconnected and refused) for a while. Our own scoring, since py-libp2p's is permissive."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class _Penalty:
    points: float
    at: float


class PeerScores:
    """Points per peer id (a string); `penalize` says whether the peer just crossed the line."""

    def __init__(self, threshold: float, half_life_s: float, ban_s: float) -> None:
        self.threshold = threshold
        self.half_life_s = half_life_s
        self.ban_s = ban_s
        self._penalties: dict[str, _Penalty] = {}
        self._banned_until: dict[str, float] = {}

    def points(self, peer: str, now: float) -> float:
        penalty = self._penalties.get(peer)
        if penalty is None:
            return 0.0
        return penalty.points * math.pow(0.5, (now - penalty.at) / self.half_life_s)

    def penalize(self, peer: str, now: float, points: float = 1.0) -> bool:
        """Add `points`; True exactly when this pushes the peer over the threshold (ban it)."""
        total = self.points(peer, now) + points
        self._penalties[peer] = _Penalty(total, now)
        # a little slack, so that n penalties in quick succession reach a threshold of n
        if total >= self.threshold - 0.01 and not self.is_banned(peer, now):
            self._banned_until[peer] = now + self.ban_s
            return True
        return False

    def ban(self, peer: str, now: float) -> None:
        self._banned_until[peer] = now + self.ban_s

    def is_banned(self, peer: str, now: float) -> bool:
        until = self._banned_until.get(peer)
        if until is None:
            return False
        if now >= until:
            del self._banned_until[peer]
            self._penalties.pop(peer, None)
            return False
        return True
