"""Forwarding while the append becomes durable: the ingest foresees, when a message's events are
queued, exactly what the store will do with them; gossip forwards a message whose events the
store takes without waiting for the commit, and a node whose disk is slow no longer slows the
hop through it. Topology of the network test: sender - A - B."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
import trio

from events.author import Author
from events.crypto import LocalKeySigner
from events.envelope import SignedEvent, sign_event
from p2p.gossip import encode_batch
from p2p.holding import Holding
from p2p.ingest import Ingest
from p2p.localnet import connect, open_local_nodes
from storage.service import StoreService
from storage.store import EventStore, Outcome
from tests.conftest import key
from tests.test_p2p_bad_input import attacker_of, offer
from tests.test_p2p_gossip_order import QUIET

TAKEN = {Outcome.APPENDED, Outcome.DUPLICATE, Outcome.EQUIVOCATION}


def _chain(author: Author, n: int) -> list[SignedEvent]:
    return [author.sign(offer(i), i) for i in range(1, n + 1)]


def _scenario(rng: random.Random, chains: list[list[SignedEvent]], rivals: list[SignedEvent]):
    """Batches of events in a shuffled, partly repeated order: gaps, duplicates, events that
    break a chain and equivocations all occur."""
    pool = [e for chain in chains for e in chain] + rivals
    order = [rng.choice(pool) for _ in range(40)]
    batches = []
    while order:
        size = rng.randint(1, 5)
        batches.append(order[:size])
        order = order[size:]
    return batches


async def test_ingest_foresees_what_the_store_does(tmp_path: Path) -> None:
    authors = [Author(LocalKeySigner(key(40 + i))) for i in range(2)]
    chains = [_chain(a, 6) for a in authors]
    signer = authors[0].signer
    rivals = [  # a second event at seq 2 of author 0, and one linking to nothing
        sign_event(signer, version=1, kind=2, seq=2, prev=chains[0][0].id, time_ms=5, body=["x"]),
        sign_event(signer, version=1, kind=2, seq=3, prev=bytes(32), time_ms=6, body=["y"]),
    ]
    seen: dict[bool, int] = {True: 0, False: 0}
    for seed in range(12):
        rng = random.Random(seed)
        with EventStore.open_dir(tmp_path / f"s{seed}") as store:
            service = StoreService(store)
            ingest = Ingest(service, Holding(100, 60.0))
            async with trio.open_nursery() as nursery:
                await nursery.start(service.run)
                # queued back to back, none waited for: the foresight must count what is queued
                queued = [(b, *ingest.enqueue(b)) for b in _scenario(rng, chains, rivals)]
                for batch, pending, foreseen in queued:
                    results = await ingest.complete(batch, "test", pending)
                    outcomes = {r.outcome for r in results}
                    assert foreseen == (outcomes <= TAKEN), (seed, outcomes)
                    seen[foreseen] += 1
                service.close()
            assert ingest.queued == 0
    assert seen[True] and seen[False]  # both answers were exercised


async def test_a_failed_commit_makes_its_authors_unsure(tmp_path: Path) -> None:
    failing, other = (Author(LocalKeySigner(key(50 + i))) for i in range(2))
    first, second = _chain(failing, 2)
    (alone,) = _chain(other, 1)
    with EventStore.open_dir(tmp_path / "s") as store:
        service = StoreService(store)
        ingest = Ingest(service, Holding(100, 60.0))
        real_append = store.append

        def broken_disk(events):
            raise OSError("disk I/O error")

        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            store.append = broken_disk  # type: ignore[method-assign]
            pending, foreseen = ingest.enqueue([first])
            assert foreseen
            with pytest.raises(OSError):
                await ingest.complete([first], "test", pending)
            store.append = real_append  # type: ignore[method-assign]
            # seq 2 would link to the queued tip, but that append failed: not foreseen
            pending, foreseen = ingest.enqueue([second])
            assert not foreseen
            assert (await ingest.complete([second], "test", pending))[0].outcome is Outcome.GAP
            pending, foreseen = ingest.enqueue([alone])  # another author is unaffected
            assert foreseen
            await ingest.complete([alone], "test", pending)
            service.close()
        assert ingest.queued == 0 and store.count() == 1


async def test_a_node_forwards_while_its_append_is_being_made_durable(tmp_path: Path) -> None:
    author = Author(LocalKeySigner(key(55)))
    events = _chain(author, 3)
    async with open_local_nodes(tmp_path, 2, QUIET) as (a, b):
        await connect([a, b], [(0, 1)])
        store = a.ingest.service.store
        real_append = store.append
        disk_free = threading.Event()

        def slow_disk(batch):
            disk_free.wait(30)  # the commit's worker thread waits: A's loop goes on
            return real_append(batch)

        store.append = slow_disk  # type: ignore[method-assign]
        try:
            async with attacker_of(a) as sender:
                await sender.pubsub.publish(a.gossip.topic, encode_batch([e.raw for e in events]))
                with trio.fail_after(20):
                    await b.wait_until(lambda: b.event_count() == len(events))
                assert a.event_count() == 0  # B has them by gossip through A, before A's commit
                disk_free.set()
                with trio.fail_after(20):
                    await a.wait_until(lambda: a.event_count() == len(events))
        finally:
            disk_free.set()
            store.append = real_append  # type: ignore[method-assign]
        assert a.ingest.queued == 0
        assert b.sync.stored == 0  # nothing came by sync


async def test_a_forwarded_message_whose_commit_fails_is_logged_and_the_node_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    authors = [Author(LocalKeySigner(key(60 + i))) for i in range(3)]
    firsts = [_chain(author, 1)[0] for author in authors]
    async with open_local_nodes(tmp_path, 2, QUIET) as (a, b):
        await connect([a, b], [(0, 1)])
        store = a.ingest.service.store
        real_append = store.append

        def broken_disk(batch):
            raise OSError("disk I/O error")

        store.append = broken_disk  # type: ignore[method-assign]
        try:
            async with attacker_of(a) as sender:
                for event in firsts[:2]:  # two messages, each forwarded, each commit failing
                    await sender.pubsub.publish(a.gossip.topic, encode_batch([event.raw]))
                    with trio.fail_after(20):
                        await b.wait_until(lambda e=event: b.ingest.heads.get(e.author, 0) == 1)
                store.append = real_append  # type: ignore[method-assign]
                await sender.pubsub.publish(a.gossip.topic, encode_batch([firsts[2].raw]))
                with trio.fail_after(20):
                    await a.wait_until(lambda: a.ingest.heads.get(firsts[2].author, 0) == 1)
        finally:
            store.append = real_append  # type: ignore[method-assign]
        # the failed commits ran before this one (appends commit in queue order)
        assert a.gossip.store_failures == 2
        assert a.event_count() == 1 and a.ingest.queued == 0
    failures = [r for r in caplog.records if "could not store" in r.getMessage()]
    assert len(failures) == 1 and "disk I/O error" in failures[0].getMessage()
