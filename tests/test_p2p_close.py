"""A stopping node's close is bounded: py-libp2p resets a failed stream in a scope shielded from
cancellation, and when the peer no longer reads that write waits for good (seen in the
one-process bench network: a sync worker's reset held a node's close for minutes). After
CLOSE_GRACE_S the node aborts its connections, which wakes such a write with an error. Real
libp2p hosts on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import trio
from libp2p.peer.id import ID

from p2p.config import P2PConfig
from p2p.connections import abort_connections, socket_of
from p2p.localnet import open_local_nodes
from tests.polling import until


async def test_aborting_closes_every_connection_at_once_and_the_peers_notice(
    tmp_path: Path,
) -> None:
    async with open_local_nodes(tmp_path, 3) as (a, b, c):
        await a.connect(b.addrs[0])
        await a.connect(c.addrs[0])
        host = a.running.host
        streams = [socket_of(conn) for conns in host.get_network().connections.values()
                   for conn in (conns if isinstance(conns, list) else [conns])]  # fmt: skip
        assert len(streams) >= 2 and all(s is not None for s in streams)
        assert abort_connections(host) == len(streams)
        assert all(s is not None and s.socket.fileno() == -1 for s in streams)
        assert abort_connections(host) == 0  # nothing left open to close
        # the peers see the connection go (no goodbye was sent) and may be dialled again
        await until(lambda: a.peer_id not in {str(p) for p in b.running.host.get_connected_peers()},
                    "b notices the abort", 10)  # fmt: skip
        await a.connect(b.addrs[0])
        await until(lambda: b.peer_id in {str(p) for p in host.get_connected_peers()},
                    "a dials b again", 10)  # fmt: skip


async def test_a_closed_connection_still_listed_is_not_an_open_one(tmp_path: Path) -> None:
    # what the gateway checks before it reuses a connection to an orchestrator
    async with open_local_nodes(tmp_path, 2) as (a, b):
        await a.connect(b.addrs[0])
        peer = ID.from_base58(b.peer_id)
        assert a.has_open_connection(peer)
        (conn,) = a.running.host.get_network().get_connections(peer)
        stream = socket_of(conn)
        assert stream is not None
        stream.socket.close()  # the state py-libp2p is in before it removes the connection
        await until(lambda: conn.is_closed, "the connection sees its socket gone", 10)
        assert not a.has_open_connection(peer)
        await a.connect(b.addrs[0])  # a dial now makes a new one
        assert a.has_open_connection(peer)


async def test_a_write_blocked_on_an_aborted_socket_wakes_with_an_error(tmp_path: Path) -> None:
    # the shape of the stuck close: a shielded write to a peer that reads nothing
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listener.accept()  # never reads
    failed: list[BaseException] = []

    async def write_until_blocked() -> None:
        with trio.CancelScope(shield=True):
            try:
                for _ in range(10_000):  # bounded: the buffers hold far less than 640 MB
                    await client.send_all(b"\0" * 65536)
            except trio.ClosedResourceError as exc:
                failed.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write_until_blocked)
        await trio.testing.wait_all_tasks_blocked(0.2)
        assert not failed  # blocked: the peer does not read
        client.socket.close()  # what abort_connections does to each connection
    assert failed and isinstance(failed[0], trio.ClosedResourceError)
    await server.aclose()
    await listener.aclose()


async def test_a_stopped_node_leaves_no_connection_behind_at_its_peers(tmp_path: Path) -> None:
    # a node stops by cancellation, and py-libp2p's close under it left the sockets open: its
    # peers (in another process, or this one) kept a live connection to it, and its place
    quiet = P2PConfig(sync_interval_s=60.0)  # no sync round that would find b gone
    async with open_local_nodes(tmp_path / "a", 1, quiet) as (a,):
        network = a.running.host.get_network()
        async with open_local_nodes(tmp_path / "b", 1, quiet) as (b,):
            await b.connect(a.addrs[0])
            gone = b.running.host.get_id()
            here = a.running.host.get_id()
            # past the connection's start: each has the other's subscriptions, and both ran
            # the sync a new connection starts
            await until(lambda: gone in a.running.pubsub.peers and here in b.running.pubsub.peers
                        and a.sync.sessions and b.sync.sessions and not a.sync._in_flight
                        and not b.sync._in_flight, "a and b past their start", 10)  # fmt: skip
        await until(lambda: gone not in network.connections, "a sees b gone", 10)
        await until(lambda: network._inbound_limiter.borrowed_tokens == 0, "b's place freed", 10)
