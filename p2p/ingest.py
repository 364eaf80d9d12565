"""The one way events enter the store from the network (and from the node itself): group-committed
appends, held events released when their chain catches up, evidence logged, and a change signal
that tests and the node wait on instead of polling.

Every append is queued here, in the order the store commits them, so the ingest knows each
author's chain tip including what is queued: when a message's events are queued it can tell,
before the commit, whether the store will take them all (or knows them already). Gossip uses
that to forward a message while its append is still being made durable."""

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
        stored = service.store.heads()
        self.heads: dict[bytes, int] = {a: h.seq for a, h in stored.items()}
        # each author's chain tip, counting the appends queued and not yet committed
        self._tips: dict[bytes, tuple[int, bytes]] = {a: (h.seq, h.id) for a, h in stored.items()}
        self._unsure: set[bytes] = set()  # authors whose queued append failed: tip unknown
        self.queued = 0  # events queued and not yet through `complete`
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
        pending, _ = self.enqueue(events)
        return await self.complete(events, via, pending)

    def enqueue(self, events: Sequence[SignedEvent]) -> tuple[Pending, bool]:
        """Queue the append of `events` now (appends commit in queue order); finish with
        `complete`. Also says whether the store will append every event or finds it known
        (a duplicate, or an equivocation kept as evidence): False when one would be held for
        its predecessor, breaks its author's chain, or has an author whose tip is unsure."""
        foreseen = True
        tips = self._tips
        for event in events:
            if event.author in self._unsure:
                foreseen = False
                continue
            seq, tip = tips.get(event.author, (0, b""))
            if event.seq <= seq:
                continue  # stored or queued: a duplicate or an equivocation
            if event.seq == seq + 1 and event.prev == tip:
                tips[event.author] = (event.seq, event.id)  # as the store's plan will do
            else:
                foreseen = False
        self.queued += len(events)
        return self.service.enqueue(events), foreseen

    async def complete(
        self, events: Sequence[SignedEvent], via: str, pending: Pending
    ) -> list[AppendResult]:
        """Wait for a queued append and act on its results, as `submit` does."""
        try:
            results = await self.service.wait(pending)
        except BaseException:
            if pending.done.is_set():  # the commit failed: what it would have appended is not
                self._unsure.update(event.author for event in events)
            raise
        finally:
            self.queued -= len(events)
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
