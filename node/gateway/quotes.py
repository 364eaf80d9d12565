"""Quotes fetched ahead: while a job is segmented and probed, the gateway asks the orchestrator
that selection would pick now for its ticket params, so the first segment's upload does not
wait for a quote. Each such quote is used once, while it is fresh (MAX_AGE_S)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
from libp2p.peer.id import ID

from node.gateway.payment import Payer
from payments.params import TicketParams

MAX_AGE_S = 5.0  # a quote fetched ahead of a job's first segment is used this fresh


@dataclass(slots=True)
class _Ahead:
    at: float  # time.monotonic() when it was asked for
    done: trio.Event = field(default_factory=trio.Event)
    params: TicketParams | None = None  # None: the quote failed
    taken: bool = False  # a segment's attempt waits for it (it is used once)


class QuotesAhead:
    """The quotes fetched ahead, by orchestrator address."""

    def __init__(self, payer: Payer) -> None:
        self._payer = payer
        self._ahead: dict[bytes, _Ahead] = {}

    async def fetch(self, orch: bytes, dial: Callable[[], Awaitable[ID]]) -> None:
        """Ask `orch` (reached by `dial`) for a quote, unless one is on its way or fresh; the
        quote's errors are raised (the caller logs them: an attempt quotes for itself)."""
        old = self._ahead.get(orch)
        if old is not None and time.monotonic() - old.at < MAX_AGE_S:
            return
        ahead = self._ahead[orch] = _Ahead(time.monotonic())
        try:
            ahead.params = await self._payer.quote(await dial())
        finally:
            ahead.done.set()

    async def quote(self, orch: bytes, peer: ID) -> TicketParams:
        """A fresh quote fetched ahead (waited for if still on its way), else a new one. The
        quote fetched ahead is used once; another segment for the same orchestrator asks for its
        own after that one has landed, so the orchestrator answers the first segment's first."""
        ahead = self._ahead.get(orch)
        if ahead is not None and time.monotonic() - ahead.at >= MAX_AGE_S:
            del self._ahead[orch]  # stale: ask anew
        elif ahead is not None:
            mine = not ahead.taken
            ahead.taken = True
            with trio.move_on_at(trio.current_time() + MAX_AGE_S):
                await ahead.done.wait()
            if self._ahead.get(orch) is ahead:
                del self._ahead[orch]
            if mine and ahead.params is not None:
                return ahead.params
        return await self._payer.quote(peer)
