"""N castnet nodes as N OS processes on loopback, started the way a user starts them
(`python -m node.cli node start --data-dir ... --bootstrap ...`), joined by bootstrap addresses
only: node i dials up to 3 earlier nodes, and peer exchange adds connections while a node's
gossip mesh is short of `--peers` (castnet's default, 4: gossipsub's D_lo); with `--seed`, every
node bootstraps to node 0 only (strangers given one seed address). A publisher node in this
process (a castnet node too, bootstrapped to 3 of them, or to the seed) injects the events; the
N processes do all the receiving. `peers_per_node`: the mean connections per node at the end of
the paced phase; `first_node_peers`: node 0's (the seed's) at the end, which `--max-peers`
bounds (idle connections outside its mesh are trimmed once 30 s old).

- propagation (`p50_ms`, `p95_ms`): a paced phase, `--samples` events published at `--rate` per
  second (well under the limit, so it measures the network, not a queue): per event, the
  publisher's `publish` call (which stores it durably first) -> stored on all N. "Stored" is read
  from each node's SQLite log (read-only, the ids of new rows, polled every 2 ms while the node
  lacks an event on its way, so figures carry up to ~2 ms of polling)
- throughput: `--events` events from `--authors` authors, published as fast as back-pressure
  allows (the publisher stores them 64 per commit); events/s until all N have all; `lost` =
  events that reached a node by sync instead of gossip (the nodes log "synced N events from P
  (M new)"); `drops` = py-libp2p outbound drops (the nodes log
  them; the publisher counts its own). Latency under this load (`load_p50_ms`, `load_p95_ms`):
  per event, from the start of its group's store-and-publish to stored on all N; it is mostly
  time spent queued behind earlier events, not propagation
- CPU time per event per node, from /proc/<pid>/stat over the throughput phase
- this machine's limit, measured in the same run: cores / (N x (verify + durable append) of one
  event), the append in batches of one gossip message (64 events) with synchronous=FULL; and
  what a libp2p message signature costs (sign, verify), since castnet signs every message
  (gossipsub StrictSign, which js and go peers require), also per event at the batch size seen
- the same run's one-process figures: the same N nodes and topology inside this process (every
  node on one core), measured the same way (`one_process_*`)
- catch-up: a fresh node process, bootstrapped to a node holding `--backlog` events, until it
  has stored them all (sync)

- `steal_share`: the share of the machine's CPU time its host (on a virtual machine) gave to
  others during the run, from /proc/stat; `load_average_before`: the 1-minute load at the start

No WAN delay is modelled: every figure is loopback.

Usage: python bench/net_bench.py [--nodes 10] [--events 3000] [--samples 150] [--rate 5]
                                 [--backlog 100000] [--peers 4] [--seed] [--max-peers 64] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from net_procs import (  # noqa: E402
    DROPPED_LINE,
    POLL_S,
    SYNCED_LINE,
    Arrivals,
    Local,
    dial_targets,
    in_process,
    processes,
    wait_all,
)

from events import kinds as k  # noqa: E402
from events.author import Author  # noqa: E402
from events.crypto import LocalKeySigner, keccak256  # noqa: E402
from events.envelope import SignedEvent, decode_verified  # noqa: E402
from node.local.synth import synth_events  # noqa: E402
from p2p.config import MAX_PEERS, PEERS_TARGET, P2PConfig  # noqa: E402
from p2p.gossip import DROPS, MAX_BATCH_EVENTS  # noqa: E402
from p2p.host import quiet_libp2p  # noqa: E402
from p2p.node import P2PNode, open_node  # noqa: E402
from storage.store import EventStore  # noqa: E402

# under load the logs are read less often: each read is a query per node, made in the bench's
# process on the cores the nodes need, and latencies under load are seconds (queueing), not ms
_LOAD_POLL_S = 0.02


# no phase takes this long (each waits at most 600 s for its events, the catch-up 1200 s); a
# close that never ends (seen twice in one-process runs, cause not found) ends the bench instead
STUCK_S = 1300.0
_phase = {"name": "start", "since": time.monotonic()}


def progress(message: str) -> None:
    """One line on stderr per phase (stdout carries the figures)."""
    _phase.update(name=message, since=time.monotonic())
    print(f"[net_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def watchdog() -> None:
    """A thread: exits the bench (status 1, naming the phase) when a phase outlasts STUCK_S."""
    while True:
        time.sleep(5)
        if time.monotonic() - _phase["since"] > STUCK_S:
            print(f"net_bench: stuck for {STUCK_S:g} s in: {_phase['name']}", file=sys.stderr,
                  flush=True)  # fmt: skip
            os._exit(1)


def authors(n: int, tag: str) -> list[Author]:
    return [Author(LocalKeySigner(keccak256(f"net/{tag}/{i}".encode()))) for i in range(n)]


def offer(i: int) -> k.Offer:
    return k.Offer(100 + i, 1, ("transcode:h264",), 2, "bench", ())


async def meshed(publisher: P2PNode, want: int) -> None:
    with trio.fail_after(30):
        while len(publisher.running.router.mesh.get(publisher.gossip.topic, ())) < want:
            await trio.sleep(0.05)


async def propagation(
    publisher: P2PNode, procs: list[Any], arrivals: Arrivals, samples: int, rate: float
) -> tuple[list[float], float]:
    """Seconds from `publish` to stored on all nodes, for `samples` events published `rate` per
    second (4 authors), each on its own schedule whether or not the last one has arrived; and
    the nodes' mean CPU seconds per event over the phase."""
    writers = authors(4, "lat")
    events = [
        writers[i % len(writers)].sign(offer(i), i // len(writers) + 1) for i in range(samples)
    ]
    started: list[float] = []
    cpu = [p.cpu_s() for p in procs]
    begin = trio.current_time()
    for i, event in enumerate(events):
        await trio.sleep_until(begin + i / rate)
        arrivals.expect([event.id])
        started.append(time.perf_counter())
        await publisher.publish(event)
    stored = await arrivals.wait([e.id for e in events], 60)
    used = statistics.mean(p.cpu_s() - c for p, c in zip(procs, cpu, strict=True))
    if isinstance(procs[0], Local):  # one process: its CPU time is shared by all the nodes
        used /= len(procs)
    return [done - start for start, done in zip(started, stored, strict=True)], used / samples


async def throughput(
    publisher: P2PNode,
    procs: list[Any],
    arrivals: Arrivals,
    events: list[SignedEvent],
    poll_s: float = _LOAD_POLL_S,
) -> dict[str, float]:
    arrivals.interval = poll_s
    harness_cpu = time.process_time()
    sizes = [p.log_size() for p in procs]
    synced_before = sum(p.log_sum(SYNCED_LINE, 0) for p in procs if isinstance(p, Local))
    cpu = [p.cpu_s() for p in procs]
    drops = DROPS.dropped
    messages = publisher.gossip.messages
    target = publisher.event_count() + len(events)
    arrivals.expect([e.id for e in events])
    start = time.perf_counter()
    # the publisher stores what it injects in group commits of one gossip message (as an import
    # would), so its own fsyncs do not cap the rate the N nodes are measured at
    sent: list[float] = []
    for i in range(0, len(events), MAX_BATCH_EVENTS):
        chunk = events[i : i + MAX_BATCH_EVENTS]
        sent += [time.perf_counter()] * len(chunk)
        await publisher.ingest.submit(chunk, "self")
        for event in chunk:
            await publisher.gossip.publish(event.raw)
    await wait_all(procs, target, 600, poll_s)
    elapsed = time.perf_counter() - start
    harness_cpu = time.process_time() - harness_cpu
    stored = await arrivals.wait([e.id for e in events], 60)
    arrivals.interval = POLL_S
    under_load = [done - s for s, done in zip(sent, stored, strict=True)]
    used = [p.cpu_s() - c for p, c in zip(procs, cpu, strict=True)]
    if isinstance(procs[0], Local):  # one process: its CPU time is shared by all the nodes
        used = [used[0] / len(procs)] * len(procs)
    lost = sum(p.log_sum(SYNCED_LINE, s) for p, s in zip(procs, sizes, strict=True)) - synced_before
    return {
        "events_per_s": len(events) / elapsed,
        "lost": lost,
        "drops": DROPS.dropped
        - drops
        + sum(p.log_sum(DROPPED_LINE, s) for p, s in zip(procs, sizes, strict=True)),
        "cpu_us_per_event_per_node": statistics.mean(used) / len(events) * 1e6,
        "events_per_message": len(events) / max(1, publisher.gossip.messages - messages),
        "load_p50_ms": statistics.median(under_load) * 1000,
        "load_p95_ms": pct(under_load, 95) * 1000,
        # the bench process's CPU per second of the phase: the publisher node and the polling
        "harness_cpu_share": harness_cpu / elapsed,
    }


def node_cost(base: Path, count: int = 6400, batch: int = 64) -> float:
    """Seconds of verify + durable append of one event, appended `batch` at a time."""
    writers = authors(16, "cost")
    raws = [writers[i % 16].sign(offer(i), i + 1).raw for i in range(count)]
    with EventStore.open_dir(base / "cost") as store:
        start = time.process_time()
        wall = time.perf_counter()
        for i in range(0, count, batch):
            store.append([decode_verified(r) for r in raws[i : i + batch]])
        # the fsyncs of synchronous=FULL are wall time the CPU clock does not see
        return max(time.process_time() - start, time.perf_counter() - wall) / count


def signature_cost(n: int = 500) -> tuple[float, float]:
    """Microseconds to sign and to verify one libp2p gossip message (secp256k1 key)."""
    from libp2p.crypto.secp256k1 import create_new_key_pair

    pair = create_new_key_pair(keccak256(b"net/sig"))
    payload = b"libp2p-pubsub:" + os.urandom(600)
    start = time.perf_counter()
    sigs = [pair.private_key.sign(payload) for _ in range(n)]
    signed = time.perf_counter() - start
    start = time.perf_counter()
    assert all(pair.public_key.verify(payload, s) for s in sigs)
    verified = time.perf_counter() - start
    return signed / n * 1e6, verified / n * 1e6


def cpu_ticks() -> tuple[int, int]:
    """(stolen, total) CPU ticks of the whole machine so far (/proc/stat): on a virtual machine,
    the time its host ran something else while this machine wanted the CPU."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return fields[7], sum(fields)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def measure(
    base: Path,
    name: str,
    procs: list[Any],
    boot: tuple[str, ...],
    count: int,
    n_authors: int,
    samples: int,
    rate: float,
    poll_s: float,
    peers: int,
) -> dict[str, float]:
    """Propagation (paced) and throughput (sustained) through `procs` from a publisher node in
    this process."""
    config = P2PConfig(listen=("/ip4/127.0.0.1/tcp/0",), bootstrap=boot, peers_target=peers)
    async with open_node(base / f"publisher-{name}", config) as publisher:
        await meshed(publisher, min(len(boot), len(procs)))
        # this process (the publisher and the polling) holds every module and the prepared
        # events: a full collection of all that took 70-100 ms, and the paced sample it fell on
        # was each run's slowest; what exists now is never collected again
        gc.collect()
        gc.freeze()
        async with trio.open_nursery() as nursery:
            arrivals = Arrivals(procs)
            await nursery.start(arrivals.run)
            progress(f"{name}: propagation, {samples} events at {rate:g}/s")
            latencies, paced_cpu = await propagation(publisher, procs, arrivals, samples, rate)
            connections = statistics.mean(p.peers() for p in procs)
            writers = authors(n_authors, f"tput-{name}")
            batch = [writers[i % n_authors].sign(offer(i), i + 1) for i in range(count)]
            progress(f"{name}: throughput, {count} events")
            flow = await throughput(publisher, procs, arrivals, batch, poll_s)
            first_peers = procs[0].peers()  # the seed, with --seed
            nursery.cancel_scope.cancel()
        progress(f"{name}: done, closing the publisher")
    flow["p50_ms"] = statistics.median(latencies) * 1000
    flow["p95_ms"] = pct(latencies, 95) * 1000
    flow["paced_cpu_us_per_event_per_node"] = paced_cpu * 1e6
    flow["peers_per_node"] = connections
    flow["first_node_peers"] = first_peers
    return flow


async def catch_up(base: Path, backlog: int) -> float:
    """Seconds until a fresh node process, bootstrapped to a node holding `backlog` events,
    has stored all of them (sync; started the way a user starts a node)."""
    raws = [e.raw for e in synth_events(backlog, 12, seed=13)]
    source_dir = base / "backlog"
    with EventStore.open_dir(source_dir) as store:
        for i in range(0, len(raws), 4096):
            store.append([decode_verified(r) for r in raws[i : i + 4096]])
    del raws
    config = P2PConfig(listen=("/ip4/127.0.0.1/tcp/0",))
    async with open_node(source_dir, config) as source:
        start = time.perf_counter()
        async with processes(base / "late", 1, bootstrap=tuple(source.addrs[:1])) as (late,):
            await wait_all([late], backlog, 1200)
            return time.perf_counter() - start


async def run(
    n: int,
    count: int,
    n_authors: int,
    samples: int,
    rate: float,
    backlog: int,
    keep: Path | None,
    poll_s: float = _LOAD_POLL_S,
    peers: int = PEERS_TARGET,
    seed: bool = False,
    max_peers: int = MAX_PEERS,
) -> dict[str, object]:
    with contextlib.ExitStack() as stack:
        if keep is None:
            base = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        else:
            keep.mkdir(parents=True, exist_ok=True)
            base = Path(tempfile.mkdtemp(prefix="net-bench-", dir=keep))
        cost = node_cost(base)
        sign_us, verify_us = signature_cost()
        cores = os.cpu_count() or 1
        progress(f"starting {n} node processes")
        procs_cm = processes(base / "procs", n, peers=peers, seed=seed, max_peers=max_peers)
        async with procs_cm as procs:
            boot = tuple(p.addr for p in dial_targets(procs, seed))
            flow = await measure(
                base, "procs", procs, boot, count, n_authors, samples, rate, poll_s, peers
            )
        progress(f"starting {n} nodes in this process")
        async with in_process(base, n, peers, seed, max_peers) as locals_:
            boot = tuple(p.node.addrs[0] for p in dial_targets(locals_, seed))
            one = await measure(
                base, "local", locals_, boot, count, n_authors, samples, rate, poll_s, peers
            )
        if backlog:
            progress(f"catch-up of a {backlog}-event backlog")
        synced_s = await catch_up(base, backlog) if backlog else None
        limit = cores / (n * cost)
        per_message = flow["events_per_message"]
        figures: dict[str, object] = {
            "nodes": n,
            "p50_ms": round(flow["p50_ms"], 1),
            "p95_ms": round(flow["p95_ms"], 1),
            "paced_events": samples,
            "paced_rate_per_s": rate,
            "peers_target": peers,
            "topology": "seed" if seed else "random-3",
            "peers_per_node": round(flow["peers_per_node"], 1),
            "max_peers": max_peers,
            # node 0's connections at the end of the run: with --seed, what trimming
            # left the seed everyone dialled (it keeps its gossip mesh, up to D_hi = 12)
            "first_node_peers": int(flow["first_node_peers"]),
            # CPU each node spends per paced event (one event per gossip message, every copy
            # a mesh peer forwards received and checked): what sets the paced latency here
            "paced_cpu_us_per_event_per_node": round(flow["paced_cpu_us_per_event_per_node"], 1),
            "load_p50_ms": round(flow["load_p50_ms"], 1),
            "load_p95_ms": round(flow["load_p95_ms"], 1),
            "events_per_s": round(flow["events_per_s"], 1),
            "limit_events_per_s": round(limit, 1),
            "fraction_of_limit": round(flow["events_per_s"] / limit, 3),
            "lost": int(flow["lost"]),
            "drops": int(flow["drops"]),
            "harness_cpu_share": round(flow["harness_cpu_share"], 2),
            "deliveries": n * count,
            "cpu_us_per_event_per_node": round(flow["cpu_us_per_event_per_node"], 1),
            "events_per_message": round(per_message, 1),
            "verify_append_us_per_event": round(cost * 1e6, 1),
            "libp2p_sign_us": round(sign_us, 1),
            "libp2p_verify_us": round(verify_us, 1),
            # what StrictSign costs each node per event: one signature check per message it
            # receives (the publisher also signs once per message)
            "libp2p_signing_us_per_event": round(verify_us / max(per_message, 1.0), 1),
            "one_process_p50_ms": round(one["p50_ms"], 1),
            "one_process_p95_ms": round(one["p95_ms"], 1),
            "one_process_load_p50_ms": round(one["load_p50_ms"], 1),
            "one_process_load_p95_ms": round(one["load_p95_ms"], 1),
            "one_process_events_per_s": round(one["events_per_s"], 1),
            "one_process_lost": int(one["lost"]),
            "one_process_drops": int(one["drops"]),
            "one_process_cpu_us_per_event_per_node": round(one["cpu_us_per_event_per_node"], 1),
            "cores": cores,
            "events": count,
        }
        if synced_s is not None:
            figures["catch_up_events"] = backlog
            figures["catch_up_s"] = round(synced_s, 1)
            figures["catch_up_events_per_s"] = round(backlog / synced_s, 1)
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--events", type=int, default=3000, help="throughput phase")
    parser.add_argument("--authors", type=int, default=20)
    parser.add_argument("--samples", type=int, default=150, help="paced propagation phase: events")
    parser.add_argument("--rate", type=float, default=5.0, help="paced phase: events per second")
    parser.add_argument("--backlog", type=int, default=100_000, help="catch-up phase (0: skip it)")
    parser.add_argument(
        "--peers", type=int, default=PEERS_TARGET,
        help="each node's mesh target (castnet node start --peers; 0: bootstrap edges only)",
    )  # fmt: skip
    parser.add_argument(
        "--seed", action="store_true",
        help="every node (and the publisher) bootstraps to node 0 only, not to 3 earlier nodes",
    )  # fmt: skip
    parser.add_argument(
        "--max-peers", type=int, default=MAX_PEERS,
        help="each node's connection limit (castnet node start --max-peers; 0: no limit)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", type=Path, help="run in a folder here and keep it (node logs)")
    parser.add_argument(
        "--load-poll-ms", type=float, default=_LOAD_POLL_S * 1000,
        help="throughput phase: how often the bench reads the nodes' logs",
    )  # fmt: skip
    args = parser.parse_args()
    if args.nodes < 1 or args.events < 1 or args.samples < 1 or args.rate <= 0:
        parser.error("--nodes, --events, --samples and --rate must be positive")
    if args.backlog < 0 or args.peers < 0 or args.max_peers < 0:
        parser.error("--backlog, --peers and --max-peers must be >= 0")
    if 0 < args.max_peers < args.peers:
        parser.error("--max-peers must be 0 or at least --peers")
    logging.basicConfig(level=logging.ERROR)
    quiet_libp2p(logging.CRITICAL)
    load = os.getloadavg()[0]
    stolen, total = cpu_ticks()
    threading.Thread(target=watchdog, daemon=True).start()
    figures = trio.run(
        run,
        args.nodes,
        args.events,
        args.authors,
        args.samples,
        args.rate,
        args.backlog,
        args.keep,
        args.load_poll_ms / 1000,
        args.peers,
        args.seed,
        args.max_peers,
    )
    figures["load_average_before"] = round(load, 1)
    stolen_after, total_after = cpu_ticks()
    # a share of this machine's CPU time its host gave to others during the run: the figures
    # above are slower by about that much than on a machine of its own
    figures["steal_share"] = round((stolen_after - stolen) / max(1, total_after - total), 3)
    if args.json:
        print(json.dumps(figures))
        return
    for name, value in figures.items():
        print(f"{name:28} {value}")


if __name__ == "__main__":
    main()
