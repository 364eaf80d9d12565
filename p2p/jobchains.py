"""Job chains at the network layer: which authors are job chains (a pair's job-level events,
sent to the counterparty only, never gossiped), whom they speak for, and which peer speaks for
a principal (where a chain's new events are pushed).

A job chain starts with a JobChainOpened at seq 1, signed by its principal. Nothing else makes an
author a job chain: the events of an author without one are network-wide."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from libp2p.peer.id import ID

from events import kinds as k
from events.crypto import SignatureError, recover_address
from events.envelope import SignedEvent, decode
from events.errors import EventError
from storage.store import EventStore

log = logging.getLogger("castnet.p2p.jobchains")
MAX_PEERS = 100_000  # principals whose peer is remembered; the oldest are forgotten


@dataclass(frozen=True, slots=True)
class Binding:
    principal: bytes
    counterparty: bytes


def read_binding(event: SignedEvent, network: str) -> Binding | None:
    """The binding an event makes when it is a valid JobChainOpened at seq 1 for `network`."""
    if event.kind != k.JobChainOpened.KIND or event.seq != 1:
        return None
    try:
        body = k.read_body(event)
    except EventError:
        return None
    if not isinstance(body, k.JobChainOpened) or body.network != network:
        return None
    digest = k.binding_digest(event.author, body.counterparty, network)
    try:
        signer = recover_address(digest, body.principal_sig)
    except SignatureError:
        return None
    if signer != body.principal or signer == event.author:
        return None
    return Binding(body.principal, body.counterparty)


class JobChains:
    """The job chains this node holds (its own and its counterparties'), its own principals,
    and the peer last seen speaking for each counterparty."""

    def __init__(self, network: str) -> None:
        self.network = network
        self.bindings: dict[bytes, Binding] = {}  # job chain author -> binding
        self.own: set[bytes] = set()  # principals whose job keys this node holds
        # principal -> the peer that served its job chain, the least recently noted first
        self.peers: dict[bytes, ID] = {}
        self._noted: dict[bytes, float] = {}  # principal -> when (time.monotonic())

    def load(self, store: EventStore) -> None:
        """The bindings the store already holds (blocking: run in a thread)."""
        for raw in store.first_of_kind(k.JobChainOpened.KIND):
            try:
                self.learn(decode(raw))
            except EventError:  # stored events decode; a damaged row is the audit's to report
                continue

    def learn(self, event: SignedEvent) -> Binding | None:
        """Record the binding `event` makes, if it is one."""
        binding = read_binding(event, self.network)
        if binding is not None:
            self.bindings[event.author] = binding
        return binding

    def is_job_event(self, event: SignedEvent) -> bool:
        """Whether `event` belongs in a job chain: a job-level kind, or any event of a job
        chain's author."""
        return event.kind in k.JOB_KINDS or event.author in self.bindings

    def private(self) -> set[bytes]:
        return set(self.bindings)

    def involving(self, principals: set[bytes]) -> list[bytes]:
        """The job chains held here that speak for, or towards, one of `principals`."""
        return [
            a
            for a, b in self.bindings.items()
            if b.principal in principals or b.counterparty in principals
        ]

    def counterparty_of(self, author: bytes) -> bytes | None:
        binding = self.bindings.get(author)
        return binding.counterparty if binding else None

    def principal_of(self, author: bytes) -> bytes | None:
        binding = self.bindings.get(author)
        return binding.principal if binding else None

    def note_peer(self, principal: bytes, peer: ID, now: float | None = None) -> None:
        self.peers.pop(principal, None)  # to the end: the order is the order of last notes
        if len(self.peers) >= MAX_PEERS:
            oldest = next(iter(self.peers))
            del self.peers[oldest], self._noted[oldest]
        self.peers[principal] = peer
        self._noted[principal] = time.monotonic() if now is None else now

    def recent_peers(self, within_s: float, now: float | None = None) -> set[ID]:
        """The peers that served a counterparty's job chain here in the last `within_s`
        seconds."""
        since = (time.monotonic() if now is None else now) - within_s
        recent: set[ID] = set()
        for principal in reversed(self.peers):
            if self._noted[principal] < since:
                break
            recent.add(self.peers[principal])
        return recent

    def accepts(self, event: SignedEvent, binding: Binding | None = None) -> bool:
        """Whether a counterparty may send us `event` unasked: it is in a job chain whose
        binding (known, or `binding`) names one of our principals as its counterparty (or is
        ours: our own events coming back)."""
        b = binding or self.bindings.get(event.author)
        return b is not None and (b.counterparty in self.own or b.principal in self.own)
