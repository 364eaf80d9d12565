"""The event store as a trio service: appends from many tasks are grouped into one durable SQLite
transaction (group commit), run in a worker thread so the trio loop never blocks on fsync."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from events.envelope import SignedEvent
from storage.errors import StoreClosed
from storage.store import AppendResult, EventStore

MAX_BATCH = 2048


@dataclass(slots=True)
class Pending:
    events: Sequence[SignedEvent]
    done: trio.Event = field(default_factory=trio.Event)
    results: list[AppendResult] | None = None
    error: BaseException | None = None


class StoreService:
    """Owns the writer task of one EventStore. `append` returns once the event is durable."""

    def __init__(self, store: EventStore, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.max_batch = max_batch
        self._send, self._receive = trio.open_memory_channel[Pending](math.inf)
        self.commits = 0  # transactions run, for tests and metrics
        self.appended = 0  # events handed to those transactions
        self.commit_seconds = 0.0  # time spent in them (append latency = this / commits)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with self._receive:
            async for first in self._receive:
                group = [first]
                size = len(first.events)
                while size < self.max_batch:
                    try:
                        more = self._receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                    group.append(more)
                    size += len(more.events)
                await self._commit(group)

    async def _commit(self, group: list[Pending]) -> None:
        batch = [e for pending in group for e in pending.events]
        started = time.perf_counter()
        try:
            results = await trio.to_thread.run_sync(self.store.append, batch)
        except Exception as exc:  # the whole transaction rolled back: every waiter learns why
            for pending in group:
                pending.error = exc
                pending.done.set()
            return
        self.commits += 1
        self.appended += len(batch)
        self.commit_seconds += time.perf_counter() - started
        offset = 0
        for pending in group:
            pending.results = results[offset : offset + len(pending.events)]
            offset += len(pending.events)
            pending.done.set()

    def enqueue(self, events: Sequence[SignedEvent]) -> Pending:
        """Queue an append now, without waiting: appends are committed in the order they were
        queued. Wait for the outcome with `wait`."""
        pending = Pending(list(events))
        try:
            self._send.send_nowait(pending)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise StoreClosed(
                f"the event log {self.store.path} is closed (its node is stopping)"
            ) from None
        return pending

    async def wait(self, pending: Pending) -> list[AppendResult]:
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.results is not None
        return pending.results

    async def append_many(self, events: Sequence[SignedEvent]) -> list[AppendResult]:
        return await self.wait(self.enqueue(events))

    async def append(self, event: SignedEvent) -> AppendResult:
        (result,) = await self.append_many([event])
        return result

    def close(self) -> None:
        self._send.close()
