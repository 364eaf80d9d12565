"""Periodic sync waits while gossip carries events, the node's own included: a node that
publishes is ahead of its peers, and a session it starts then makes them pull back the events
that are already on their way to them (counted as repaired by sync, fetched twice). Two real
nodes on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import trio
from libp2p.peer.id import ID

from events import kinds as k
from events.author import Author
from events.crypto import LocalKeySigner
from events.envelope import SignedEvent
from p2p.config import P2PConfig
from p2p.localnet import connect, open_local_nodes
from tests.conftest import key

ROUNDS = P2PConfig(sync_interval_s=0.2, sync_quiet_s=1.0, sync_max_skips=4)
PUBLISHES = 13


async def test_a_publishing_node_skips_periodic_sync_rounds_then_syncs_once(
    tmp_path: Path,
) -> None:
    author = Author(LocalKeySigner(key(31)))
    async with open_local_nodes(tmp_path, 2, ROUNDS) as (a, b):
        await connect([a, b], [(0, 1)])
        asked: list[float] = []
        ask = a.sync.request

        def counted(peer: ID) -> None:
            asked.append(trio.current_time())
            ask(peer)

        a.sync.request = counted  # type: ignore[method-assign]
        # the workload is paced by A's periodic rounds (each reads the gossip clock once): a
        # publish before the first round and after each of the next 12
        rounds_send, rounds = trio.open_memory_channel[None](64)
        gossip_clock = a.sync.last_gossip

        def round_reads() -> float:
            rounds_send.send_nowait(None)
            return gossip_clock()

        a.sync.last_gossip = round_reads

        def offer(i: int) -> SignedEvent:
            return author.sign(k.Offer(100 + i, 1, ("transcode:h264",), 2, "p", ()), 1 + i)

        start = trio.current_time()
        with trio.fail_after(30):
            await a.publish(offer(0))
            for i in range(1, PUBLISHES):
                await rounds.receive()
                await a.publish(offer(i))
        publishing = [t - start for t in asked]
        # without its own events counted, A found gossip quiet and asked B every round (12);
        # now it skips 4 rounds in a row, then asks once: twice in 12 rounds
        assert 1 <= len(publishing) <= 4, publishing
        with trio.fail_after(10):  # B has everything by gossip all the same
            await b.wait_until(lambda: b.ingest.heads.get(author.address, 0) == PUBLISHES)
