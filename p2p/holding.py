"""Events that arrived before their predecessor: held (bounded in count and age) until the
author's chain reaches them, so gossip that arrives out of order is not dropped."""

from __future__ import annotations

from collections import OrderedDict

from events.envelope import SignedEvent


class Holding:
    """At most `max_events`, each for at most `ttl_s`; the oldest is evicted first (sync will
    bring it back). Keys are (author, seq): a second event at the same place is not held."""

    def __init__(self, max_events: int, ttl_s: float) -> None:
        self.max_events = max_events
        self.ttl_s = ttl_s
        self._held: OrderedDict[tuple[bytes, int], tuple[SignedEvent, float]] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._held)

    def add(self, event: SignedEvent, now: float) -> bool:
        """Hold `event`; False if that (author, seq) is already held."""
        key = (event.author, event.seq)
        if key in self._held:
            return False
        self.expire(now)
        while len(self._held) >= self.max_events:
            self._held.popitem(last=False)
            self.evicted += 1
        self._held[key] = (event, now)
        return True

    def pop(self, author: bytes, seq: int) -> SignedEvent | None:
        found = self._held.pop((author, seq), None)
        return found[0] if found else None

    def pop_run(self, author: bytes, next_seq: int, now: float) -> list[SignedEvent]:
        """The held events of `author` from `next_seq` on, as long as they are consecutive."""
        self.expire(now)
        run: list[SignedEvent] = []
        while (found := self._held.pop((author, next_seq + len(run)), None)) is not None:
            run.append(found[0])
        return run

    def expire(self, now: float) -> None:
        while self._held:
            key, (_, added) = next(iter(self._held.items()))
            if now - added <= self.ttl_s:
                return
            del self._held[key]
            self.evicted += 1
