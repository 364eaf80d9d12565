"""Reacts to misbehaving peers: logs each rejected message once with its reason, scores the peer
down, and past the threshold disconnects it and refuses it (pubsub blacklist + our ban list)."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import trio
from libp2p.peer.id import ID

from p2p.host import RunningHost
from p2p.scoring import PeerScores

log = logging.getLogger("castnet.p2p.guard")


class PeerGuard:
    def __init__(self, running: RunningHost, scores: PeerScores) -> None:
        self.running = running
        self.scores = scores
        self.rejected = 0
        self.banned: list[str] = []  # peers banned this session, in order

    def is_banned(self, peer: ID) -> bool:
        return self.scores.is_banned(peer.to_base58(), trio.current_time())

    async def refused(self, stream: Any) -> bool:
        """Reset a stream a banned peer opened to us; True when it was refused."""
        if not self.is_banned(stream.muxed_conn.peer_id):
            return False
        await stream.reset()
        return True

    def reject(self, peer: ID, what: str, reason: str, points: float = 1.0) -> None:
        """Record one invalid message from `peer`; ban the peer when it crosses the threshold."""
        self.rejected += 1
        name = peer.to_base58()
        log.warning("rejected %s from peer %s: %s", what, name, reason)
        if self.scores.penalize(name, trio.current_time(), points):
            self.ban(peer, f"{self.scores.threshold:g} penalty points")

    def penalize(self, peer: ID, points: float, why: str) -> None:
        """Penalty points without a log line (the caller logs in aggregate); bans past the line."""
        if self.scores.penalize(peer.to_base58(), trio.current_time(), points):
            self.ban(peer, f"{self.scores.threshold:g} penalty points ({why})")

    def ban(self, peer: ID, why: str) -> None:
        """Disconnect `peer` and refuse it for `ban_s` (idempotent while banned)."""
        name = peer.to_base58()
        if name not in self.banned or not self.is_banned(peer):
            self.scores.ban(name, trio.current_time())
            self.banned.append(name)
            log.warning("disconnecting peer %s for %g s: %s", name, self.scores.ban_s, why)
        # pubsub's blacklist drops what the peer still sends; then close the connection itself
        self.running.pubsub.add_to_blacklist(peer)
        self.running.pubsub.manager.run_task(self._disconnect, peer)

    async def _disconnect(self, peer: ID) -> None:
        with contextlib.suppress(Exception):  # already gone
            await self.running.host.disconnect(peer)
