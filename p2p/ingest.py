"""The one way events enter the store from the network (and from the node itself): group-committed
appends, held events released when their chain catches up, evidence logged, and a change signal
that tests and the node wait on instead of polling."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import trio

from events.envelope import SignedEvent
from p2p.holding import Holding
from storage.service import Pending, StoreService
from storage.store import AppendResult, Outcome

log = logging.getLogger("castnet.p2p.ingest")


class Ingest:
    """Appends through a StoreService and tracks every author's head in memory."""

    def __init__(self, service: StoreService, holding: Holding) -> None:
        self.service = service
        self.holding = holding
        self.heads: dict[bytes, int] = {a: h.seq for a, h in service.store.heads().items()}
        self.counts: Counter[str] = Counter()
        self.appended = 0  # events stored through this ingest, from any source
        self._changed = trio.Event()
        self._equivocations_logged: set[tuple[bytes, int]] = set()

    async def wait_changed(self) -> None:
        """Return after the next append that stored something."""
        await self._changed.wait()

    async def submit(self, events: Sequence[SignedEvent], via: str) -> list[AppendResult]:
        """Append verified events (from peer `via`, or 'self'); one result per event."""
        if not events:
            return []
        return await self.complete(events, via, self.service.enqueue(events))

    def enqueue(self, events: Sequence[SignedEvent]) -> Pending:
        """Queue the append of `events` now (appends commit in queue order); finish with
        `complete`."""
        return self.service.enqueue(events)

    async def complete(
        self, events: Sequence[SignedEvent], via: str, pending: Pending
    ) -> list[AppendResult]:
        """Wait for a queued append and act on its results, as `submit` does."""
        results = await self.service.wait(pending)
        release: set[bytes] = set()
        rivals: list[SignedEvent] = []  # held events at a place now filled by another event
        appended = 0
        now = trio.current_time()
        for event, result in zip(events, results, strict=True):
            self.counts[result.outcome.value] += 1
            if result.outcome is Outcome.APPENDED:
                appended += 1
                if event.seq > self.heads.get(event.author, 0):
                    self.heads[event.author] = event.seq
                release.add(event.author)
                held = self.holding.pop(event.author, event.seq)  # filled by sync meanwhile
                if held is not None and held.id != event.id:
                    rivals.append(held)
            elif result.outcome is Outcome.GAP:
                self.holding.add(event, now)
                # its predecessor may have been stored while this append was in flight
                if self.heads.get(event.author, 0) >= event.seq - 1:
                    release.add(event.author)
            elif result.outcome is Outcome.EQUIVOCATION:
                self._log_equivocation(event, result, via)
            elif result.outcome is Outcome.BROKEN_CHAIN:
                log.debug(  # the caller reports it, with the peer's penalty
                    "rejected event %s from %s: author 0x%s seq %d does not link to the stored "
                    "chain", event.id.hex()[:16], via, event.author.hex()[:8], event.seq,
                )  # fmt: skip
        if appended:
            self.appended += appended
            self._changed.set()
            self._changed = trio.Event()
        if rivals:
            await self.submit(rivals, "holding")  # recorded as equivocation evidence
        for author in release:
            run = self.holding.pop_run(author, self.heads.get(author, 0) + 1, now)
            if run:
                await self.submit(run, "holding")
        return results

    def _log_equivocation(self, event: SignedEvent, result: AppendResult, via: str) -> None:
        key = (event.author, event.seq)
        if key in self._equivocations_logged:
            return
        if len(self._equivocations_logged) < 100_000:
            self._equivocations_logged.add(key)
        log.warning(
            "equivocation by 0x%s at seq %d: %s vs stored %s (from %s), kept as evidence",
            event.author.hex(), event.seq, event.id.hex()[:16], result.other_id.hex()[:16], via,
        )  # fmt: skip
