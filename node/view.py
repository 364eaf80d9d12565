"""A node's folded view of its log, kept current by folding only the events appended since the
last refresh (the fold is pure; reading the store runs in a thread)."""

from __future__ import annotations

import trio

from events.envelope import decode
from events.fold import apply
from events.state import EMPTY, State
from storage.store import EventStore


class NodeView:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.state: State = EMPTY
        self.position = 0
        self._lock = trio.Lock()

    def _catch_up(self) -> State:
        state, position = self.state, self.position
        for position, raw in self.store.read(after=self.position):  # noqa: B007
            state = apply(state, decode(raw))
        self.state, self.position = state, position
        return state

    async def refresh(self) -> State:
        async with self._lock:
            return await trio.to_thread.run_sync(self._catch_up)
