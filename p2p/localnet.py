"""Several nodes in one process on 127.0.0.1, wired by explicit edges: for tests, the benchmark
and demos. Waits for gossipsub meshes instead of sleeping."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import trio

from p2p.config import P2PConfig
from p2p.gossip import events_topic
from p2p.node import P2PNode, open_node

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
_MESH_POLL_S = 0.02  # gossipsub exposes no "mesh has k peers" event


def full_mesh(n: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(n) for b in range(a + 1, n)]


def line(n: int) -> list[tuple[int, int]]:
    return [(i, i + 1) for i in range(n - 1)]


async def connect(nodes: Sequence[P2PNode], edges: Sequence[tuple[int, int]]) -> None:
    """Dial every edge, then wait until each node meshes with its neighbours (up to the gossip
    degree), so a publish right after reaches everyone without waiting for a heartbeat."""
    neighbours: dict[int, set[int]] = {i: set() for i in range(len(nodes))}
    for a, b in edges:
        await nodes[a].connect(nodes[b].addrs[0])
        neighbours[a].add(b)
        neighbours[b].add(a)
    for i, node in enumerate(nodes):
        pubsub = node.running.pubsub
        topic = events_topic(node.config.network)
        for j in neighbours[i]:
            await pubsub.wait_for_subscription(nodes[j].running.host.get_id(), topic, timeout=10)
        need = min(len(neighbours[i]), node.config.degree_low)
        with trio.fail_after(10):
            while len(node.running.router.mesh.get(topic, ())) < need:
                await trio.sleep(_MESH_POLL_S)


@asynccontextmanager
async def open_local_nodes(
    base_dir: str | Path,
    count: int,
    config: P2PConfig | None = None,
    first: int = 0,
    discover: bool = False,
) -> AsyncIterator[list[P2PNode]]:
    """`count` started nodes with data dirs `<base_dir>/node<i>`, listening on loopback; the
    edges are the caller's (`connect`) unless `discover` lets peer exchange add its own."""
    config = dataclasses.replace(config or P2PConfig(), listen=(LOOPBACK,))
    if not discover:
        config = dataclasses.replace(config, peers_target=0)
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(open_node(Path(base_dir) / f"node{first + i}", config))
            for i in range(count)
        ]
        yield nodes
