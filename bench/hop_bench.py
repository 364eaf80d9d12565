"""What a node's disk adds to each gossip hop: forwarding while the append is being made durable
(castnet's default) against forwarding only once it is committed, in the same run.

A line of `--nodes` castnet nodes in this process (node 0 publishes; the event crosses nodes - 1
hops). Each relaying node's commits are slowed by `--disk-ms` (a sleep in the store's worker
thread before each transaction, the way a slow fsync holds it: 0 is this machine's own disk,
whose fsync takes 4 ms p50 and 10 ms p95; a network volume or a spinning disk takes 5-20 ms).
Per sample: one event published on node 0 -> stored on the last node. The two ways alternate
sample by sample; medians and p95 are reported per way and disk delay.

Usage: python bench/hop_bench.py [--nodes 5] [--samples 40] [--disk-ms 0,5,20] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from events import kinds as k  # noqa: E402
from events.author import Author  # noqa: E402
from events.crypto import LocalKeySigner  # noqa: E402
from p2p.config import P2PConfig  # noqa: E402
from p2p.gossip import MAX_QUEUED_EVENTS  # noqa: E402
from p2p.localnet import connect, line, open_local_nodes  # noqa: E402
from p2p.node import P2PNode  # noqa: E402

WAYS = {"forward": MAX_QUEUED_EVENTS, "wait": 0}  # Gossip.forward_backlog for each way


def slow_disk(node: P2PNode, delay: list[float]) -> None:
    """Every commit of `node` first holds its worker thread for `delay[0]` seconds."""
    store = node.ingest.service.store
    append = store.append

    def slowed(events: Any) -> Any:
        if delay[0]:
            time.sleep(delay[0])
        return append(events)

    store.append = slowed  # type: ignore[method-assign]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def run(nodes_n: int, samples: int, disks_ms: list[float]) -> list[dict[str, Any]]:
    author = Author(LocalKeySigner(b"\x07" * 32))
    config = P2PConfig(sync_interval_s=600.0)  # what is measured is gossip, not sync
    rows = []
    with tempfile.TemporaryDirectory() as base:
        async with open_local_nodes(Path(base), nodes_n, config) as nodes:
            await connect(nodes, line(nodes_n))
            delay = [0.0]
            for node in nodes[1:]:
                slow_disk(node, delay)
            last = nodes[-1]
            seq = 0
            for disk_ms in disks_ms:
                delay[0] = disk_ms / 1000
                times: dict[str, list[float]] = {way: [] for way in WAYS}
                for i in range(samples * len(WAYS)):
                    way = list(WAYS)[i % len(WAYS)]
                    for node in nodes:
                        node.gossip.forward_backlog = WAYS[way]
                    seq += 1
                    event = author.sign(k.Offer(seq, 1, (), 1, "p", ()), seq)
                    start = time.perf_counter()
                    await nodes[0].publish(event)
                    with trio.fail_after(30):
                        await last.wait_until(
                            lambda s=seq: last.ingest.heads.get(author.address, 0) >= s
                        )
                    times[way].append((time.perf_counter() - start) * 1000)
                    with trio.fail_after(30):  # every relay's commit ends: samples do not overlap
                        for node in nodes:
                            while node.ingest.heads.get(author.address, 0) < seq:
                                await node.ingest.wait_changed()
                for way, values in times.items():
                    rows.append({
                        "way": way, "disk_ms": disk_ms, "hops": nodes_n - 1, "samples": samples,
                        "p50_ms": round(statistics.median(values), 1),
                        "p95_ms": round(pct(values, 0.95), 1),
                    })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--disk-ms", default="0,5,20", help="commit delays to model, in ms")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    disks = [float(d) for d in args.disk_ms.split(",") if d.strip()]
    rows = trio.run(run, args.nodes, args.samples, disks)
    if args.json:
        print(json.dumps({"rows": rows}))
        return
    print(f"{'disk ms':>8} {'way':>8} {'p50 ms':>8} {'p95 ms':>8}   ({rows[0]['hops']} hops)")
    for row in rows:
        print(f"{row['disk_ms']:>8g} {row['way']:>8} {row['p50_ms']:>8} {row['p95_ms']:>8}")


if __name__ == "__main__":
    main()
