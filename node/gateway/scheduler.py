"""The gateway's segment scheduler: one bound on the segments in flight across every job that runs
at once, with free places handed to the waiting jobs in turn (round robin), so a job of two
segments started beside one of forty gets every other place instead of waiting behind all forty.
Within a job, places go to its segments in the order they asked. A segment (posted already)
holds its place from its first pick of an orchestrator to its verdict, retries included; which
orchestrator takes it, and whether that one has a free slot, is still selection's business
(node.gateway.selection), and each orchestrator's capacity is still its own bound."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager

import trio


class SegmentScheduler:
    """Places for segments; `limit()` is read at every hand-out, so the bound can follow the
    network (it is taken as at least 1). Use from the trio thread only."""

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self.in_flight = 0
        self._waiting: dict[Hashable, deque[trio.Event]] = {}  # job -> its waiters, in order
        self._turns: deque[Hashable] = deque()  # jobs with waiters; the next place goes left

    def limit(self) -> int:
        return max(1, self._limit())

    def waiting(self, job: Hashable | None = None) -> int:
        """Segments waiting for a place (of `job`, or of all jobs)."""
        if job is not None:
            return len(self._waiting.get(job, ()))
        return sum(len(q) for q in self._waiting.values())

    @asynccontextmanager
    async def place(self, job: Hashable) -> AsyncIterator[None]:
        """Hold one place for a segment of `job` while the body runs."""
        await self.acquire(job)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, job: Hashable) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._turns and self.in_flight < self.limit():
            self.in_flight += 1
            await trio.lowlevel.cancel_shielded_checkpoint()  # the place is taken: no cancel
            return
        granted = trio.Event()
        queue = self._waiting.get(job)
        if queue is None:
            queue = self._waiting[job] = deque()
            self._turns.append(job)
        queue.append(granted)
        self._hand_out()  # the bound may have grown since the last release
        try:
            await granted.wait()
        except BaseException:
            if granted.is_set():  # granted, then cancelled before it could be used
                self.release()
            else:
                self._withdraw(job, granted)
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._hand_out()

    def _hand_out(self) -> None:
        while self._turns and self.in_flight < self.limit():
            job = self._turns.popleft()
            queue = self._waiting[job]
            granted = queue.popleft()
            if queue:
                self._turns.append(job)  # its next segment waits for the job's next turn
            else:
                del self._waiting[job]
            self.in_flight += 1
            granted.set()

    def _withdraw(self, job: Hashable, granted: trio.Event) -> None:
        queue = self._waiting.get(job)
        if queue is None:
            return
        queue.remove(granted)
        if not queue:
            del self._waiting[job]
            self._turns.remove(job)
