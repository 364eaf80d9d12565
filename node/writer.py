"""A node's own events: signed in order and published one at a time, so its chain never has a gap
in its own store (an event stored past a gap would be held and never gossiped)."""

from __future__ import annotations

import time

import trio

from events.author import Author
from events.crypto import Signer
from events.envelope import SignedEvent
from events.kinds import Body
from p2p.node import P2PNode
from storage.store import Outcome


class EventWriter:
    """Signs bodies as `signer`, continuing the chain the node's store already holds."""

    def __init__(self, node: P2PNode, signer: Signer) -> None:
        self.node = node
        head = node.store.heads().get(signer.address)
        self.author = Author(signer, head)
        self._lock = trio.Lock()

    @property
    def address(self) -> bytes:
        return self.author.address

    async def emit(self, body: Body) -> SignedEvent:
        """Sign, store durably and gossip one event."""
        async with self._lock:
            event = self.author.sign(body, int(time.time() * 1000))
            result = await self.node.publish(event)
            if result.outcome is not Outcome.APPENDED:
                raise RuntimeError(f"own event not appended: {result.outcome.value}")
            return event

    async def emit_many(self, bodies: list[Body]) -> list[SignedEvent]:
        """Sign, store and gossip several events in order with one durable append (one commit
        and fsync for all of them, where `emit` pays one per event)."""
        if not bodies:
            return []
        async with self._lock:
            now = int(time.time() * 1000)
            events = [self.author.sign(body, now) for body in bodies]
            node = self.node
            if node.admission is not None:
                for event in events:
                    node.admission.own(event)
            results = await node.ingest.submit(events, "self")
            for event, result in zip(events, results, strict=True):
                if result.outcome is not Outcome.APPENDED:
                    raise RuntimeError(f"own event not appended: {result.outcome.value}")
                await node.gossip.publish(event.raw)
            return events
