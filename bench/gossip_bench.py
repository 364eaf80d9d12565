"""Gossip and sync on 10 nodes in one process on loopback (so one core does every node's work).

- latency: one event at a time from a random node, until all 10 have stored it (p50/p95)
- throughput: every node publishes as fast as back-pressure allows; events/s until all have all,
  and loss (events that had to come through sync instead of gossip). Baseline, alternated in the
  same run: raw gossipsub, one message per event, no validation and no store, counted at the
  subscription.
- catch-up: a late joiner syncs a 100,000-event backlog from one peer. Baseline: verifying and
  appending the same events locally (no network), i.e. the floor that sync can approach.

Usage: python bench/gossip_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from events import kinds as k
from events.author import Author
from events.crypto import LocalKeySigner, keccak256
from events.envelope import decode_verified
from node.local.synth import synth_events
from p2p.config import P2PConfig
from p2p.host import quiet_libp2p
from p2p.localnet import connect, full_mesh, open_local_nodes
from p2p.node import P2PNode, open_node
from storage.store import EventStore

CONFIG = P2PConfig(sync_interval_s=3600.0)  # gossip only: sync would hide losses


def offer(i: int) -> k.Offer:
    return k.Offer(100 + i, 1, ("transcode:h264",), 2, "peer", ())


def authors(n: int, tag: str) -> list[Author]:
    return [Author(LocalKeySigner(keccak256(f"bench/{tag}/{i}".encode()))) for i in range(n)]


async def latency(nodes: list[P2PNode], samples: int) -> list[float]:
    writers = authors(len(nodes), f"lat{random.random()}")
    out = []
    for i in range(samples):
        j = random.randrange(len(nodes))
        target = nodes[0].event_count() + 1
        event = writers[j].sign(offer(i), i + 1)
        start = time.perf_counter()
        await nodes[j].publish(event)
        with trio.fail_after(30):
            for node in nodes:
                await node.wait_until(lambda n=node, t=target: n.event_count() >= t)
        out.append(time.perf_counter() - start)
    return out


async def throughput_ours(nodes: list[P2PNode], per_node: int) -> tuple[float, int]:
    writers = authors(len(nodes), f"tp{random.random()}")
    events = [[w.sign(offer(i), i + 1) for i in range(per_node)] for w in writers]
    target = nodes[0].event_count() + per_node * len(nodes)
    fetched_before = sum(n.sync.stored for n in nodes)
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for node, mine in zip(nodes, events, strict=True):

            async def run(node: P2PNode = node, mine: list = mine) -> None:
                for e in mine:
                    await node.publish(e)

            nursery.start_soon(run)
    with trio.fail_after(120):
        for node in nodes:
            await node.wait_until(lambda n=node: n.event_count() >= target)
    elapsed = time.perf_counter() - start
    lost = sum(n.sync.stored for n in nodes) - fetched_before
    return per_node * len(nodes) / elapsed, lost


async def throughput_raw(nodes: list[P2PNode], per_node: int) -> float:
    """Raw gossipsub: a validator that accepts everything, nothing decoded or stored."""
    topic = nodes[0].gossip.topic
    for node in nodes:
        node.running.pubsub.set_topic_validator(topic, lambda f, m: True, False)
    try:
        targets = [n.gossip.received + per_node * len(nodes) for n in nodes]
        payloads = [[random.randbytes(380) for _ in range(per_node)] for _ in nodes]
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for node, mine in zip(nodes, payloads, strict=True):

                async def run(node: P2PNode = node, mine: list = mine) -> None:
                    for data in mine:  # one message per event, same back-pressure as ours
                        await node.gossip._wait_for_queues()
                        await node.running.pubsub.publish(topic, data)
                        await trio.sleep(0)

                nursery.start_soon(run)
        with trio.fail_after(120):
            for node, target in zip(nodes, targets, strict=True):
                while node.gossip.received < target:
                    await trio.sleep(0.005)
        return per_node * len(nodes) / (time.perf_counter() - start)
    finally:
        for node in nodes:
            node.running.pubsub.set_topic_validator(topic, node.gossip.validate, True)


async def catch_up(base: Path, backlog: int) -> tuple[float, float]:
    raws = [e.raw for e in synth_events(backlog, 12, seed=11)]
    with EventStore.open_dir(base / "source") as store:
        for i in range(0, len(raws), 4096):
            store.append([decode_verified(r) for r in raws[i : i + 4096]])
    # baseline: verify and append locally, same batch size as sync
    start = time.perf_counter()
    with EventStore.open_dir(base / "local") as store:
        for i in range(0, len(raws), CONFIG.sync_batch_events):
            store.append([decode_verified(r) for r in raws[i : i + CONFIG.sync_batch_events]])
    local = backlog / (time.perf_counter() - start)
    async with (
        open_node(base / "source", CONFIG) as source,
        open_node(base / "late", CONFIG) as late,
    ):
        start = time.perf_counter()
        await late.connect(source.addrs[0])
        with trio.fail_after(600):
            await late.wait_until(lambda: late.event_count() >= backlog)
        synced = backlog / (time.perf_counter() - start)
    return synced, local


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main(quick: bool) -> None:
    samples, per_node, rounds, backlog = (20, 20, 2, 10_000) if quick else (60, 60, 3, 100_000)
    with tempfile.TemporaryDirectory() as tmp:
        async with open_local_nodes(tmp, 10, CONFIG) as nodes:
            await connect(nodes, full_mesh(10))
            lat = await latency(nodes, samples)
            ours, raw, lost = [], [], 0
            for _ in range(rounds):  # alternate A/B
                rate, loss = await throughput_ours(nodes, per_node)
                ours.append(rate)
                lost += loss
                raw.append(await throughput_raw(nodes, per_node))
            drops = __import__("p2p.gossip", fromlist=["DROPS"]).DROPS.dropped
        synced, local = await catch_up(Path(tmp), backlog)
    ms = [x * 1000 for x in lat]
    print(f"10 nodes, full mesh, one process on loopback; {samples} latency samples, "
          f"{rounds} alternated throughput rounds of {per_node * 10} events")  # fmt: skip
    print(f"{'measure':44} {'castnet':>12} {'baseline':>12}")
    print(f"{'propagation p50 (ms, publish -> all 10 stored)':44} {pct(ms, 50):12.1f} {'':>12}")
    print(f"{'propagation p95 (ms)':44} {pct(ms, 95):12.1f} {'':>12}")
    print(
        f"{'throughput, events/s network-wide (median)':44} "
        f"{statistics.median(ours):12.0f} {statistics.median(raw):12.0f}  (raw gossipsub)"
    )
    print(f"{'  lost by gossip (fetched by sync instead)':44} {lost:12d}")
    print(f"{'  py-libp2p outbound drops (queue full)':44} {drops:12d}")
    print(f"{f'catch-up of {backlog:,} events, events/s':44} {synced:12.0f} {local:12.0f}"
          "  (local verify+append)")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("castnet").setLevel(logging.ERROR)
    quiet_libp2p(logging.CRITICAL)
    trio.run(main, args.quick)
