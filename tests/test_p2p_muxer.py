"""Yamux credit comes back in half-window batches (p2p/muxer.py): a stream read in many small reads
costs the reader a WINDOW_UPDATE frame per half window read, not one per read; the window grows
from 256 KiB to 16 MiB only as the reader takes data, and a transfer larger than the window still
completes. Two real libp2p hosts on 127.0.0.1."""

from __future__ import annotations

import contextlib
import struct
from collections import Counter
from typing import Any

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.network.stream.net_stream import INetStream
from libp2p.peer.peerinfo import PeerInfo
from libp2p.stream_muxer.yamux.yamux import (
    DEFAULT_WINDOW_SIZE,
    MAX_WINDOW_SIZE,
    TYPE_DATA,
    YAMUX_HEADER_FORMAT,
    YamuxStream,
)
from sha3 import keccak_256

from p2p.framing import HEADER, MSG_BLOB, MessageStream, pack_message
from p2p.peers import DISCONNECTED, PeerEvents
from p2p.rpc_reader import GOSSIP_WINDOW
from tests.p2p_hosts import loopback_hosts, open_stream

SINK = TProtocol("/castnet-test/sink/1")
READ = 4096  # bytes per read: thousands of reads, each a chance to send an update
WRITE = 64 * 1024
TOTAL = MAX_WINDOW_SIZE + 4 * 1024 * 1024  # the sender needs credit back to finish


async def test_many_small_writes_cost_few_window_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    updates: Counter[int] = Counter()  # by stream id, counted on the reading side
    sent = YamuxStream.send_window_update

    async def counted(self: YamuxStream, increment: Any = None, skip_lock: bool = False) -> None:
        updates[id(self)] += 1
        await sent(self, increment, skip_lock=skip_lock)

    monkeypatch.setattr(YamuxStream, "send_window_update", counted)
    received = 0
    reads = 0
    reader_stream: list[int] = []
    done = trio.Event()

    async def sink(stream: INetStream) -> None:
        nonlocal received, reads
        reader_stream.append(id(stream.muxed_stream))  # type: ignore[attr-defined]
        while received < TOTAL:
            data = await stream.read(READ)
            if not data:
                break
            received += len(data)
            reads += 1
        done.set()

    async with loopback_hosts(0x21, 0x22) as (reader, writer):
        reader.host.set_stream_handler(SINK, sink)
        stream = await open_stream(writer, reader, SINK)
        with trio.fail_after(60):
            for _ in range(TOTAL // WRITE):
                await stream.write(b"\x5a" * WRITE)
            await done.wait()
        await stream.close()

    assert received == TOTAL
    assert reads >= TOTAL // READ
    count = updates[reader_stream[0]]
    # one update per doubling of the window (each half window read), then once per half window
    doublings = (MAX_WINDOW_SIZE // DEFAULT_WINDOW_SIZE).bit_length() - 1
    assert 2 <= count <= doublings + TOTAL // (MAX_WINDOW_SIZE // 2) + 1, count


async def test_credit_grows_with_what_the_reader_takes() -> None:
    """A peer whose first small request was read must not be able to park megabytes in this
    node's memory on that stream: credit grows with what the reader has taken (doubling each
    time half the window is read, up to go-yamux's 16 MiB), not at the first read."""
    release, done = trio.Event(), trio.Event()
    received = 0
    read_by: list[Any] = []

    async def slow(stream: INetStream) -> None:
        nonlocal received
        read_by.append(stream.muxed_stream)  # type: ignore[attr-defined]
        received += len(await stream.read(100))  # one small request, then a long pause
        # frames on a connection arrive in order: any credit the read sent precedes this answer
        await stream.write(b"ok")
        await release.wait()
        while received < TOTAL:
            data = await stream.read(WRITE)
            if not data:
                break
            received += len(data)
        done.set()

    async with loopback_hosts(0x23, 0x24) as (reader, writer):
        reader.host.set_stream_handler(SINK, slow)
        stream = await open_stream(writer, reader, SINK)
        await stream.write(b"\x01" * 100)
        with trio.fail_after(30):
            assert await stream.read(2) == b"ok"
        credit = stream.muxed_stream.send_window  # type: ignore[attr-defined]
        assert credit <= DEFAULT_WINDOW_SIZE, credit  # 256 KiB, less the request
        release.set()
        with trio.fail_after(60):
            for _ in range(TOTAL // WRITE):
                await stream.write(b"\x5a" * WRITE)
            await done.wait()
        # a reader that keeps up ends with the full window granted
        assert read_by[0].target_recv_window == MAX_WINDOW_SIZE
        await stream.close()


class _Gated:
    """A stream whose reads past its first `after` bytes wait for `gate`: the reader has taken
    a blob's announcement and reads none of the blob until the test lets it."""

    def __init__(self, stream: INetStream, after: int, gate: trio.Event) -> None:
        self.stream, self.after, self.gate = stream, after, gate
        self.muxed_stream = stream.muxed_stream  # type: ignore[attr-defined]
        self.taken = 0

    async def read(self, n: int | None = None) -> bytes:
        if self.taken >= self.after:
            await self.gate.wait()
        data = await self.stream.read(n)
        self.taken += len(data)
        return data

    async def write(self, data: bytes) -> None:
        await self.stream.write(data)


async def test_a_reader_that_accepts_a_blob_credits_the_sender_for_all_of_it_at_once() -> None:
    size = 3 * 1024 * 1024
    blob = bytes(range(256)) * (size // 256)
    announcement = [MSG_BLOB, keccak_256(blob).digest(), size]
    written, received = trio.Event(), trio.Event()
    got: list[bytes] = []

    async def accept(stream: INetStream) -> None:
        gated = _Gated(stream, HEADER + len(pack_message(announcement)), written)
        got.append(await MessageStream(gated, 1024, 30).receive_blob(size))
        received.set()

    async with loopback_hosts(0x25, 0x26) as (reader, writer):
        reader.host.set_stream_handler(SINK, accept)
        stream = await open_stream(writer, reader, SINK)
        await MessageStream(stream, 1024, 30).send(announcement)
        with trio.fail_after(30):
            # the reader reads none of the blob yet: all of it goes out on the credit it gave
            # for the announced size (on the initial window alone, the writes would stall)
            for start in range(0, size, WRITE):
                await stream.write(blob[start : start + WRITE])
            written.set()
            await received.wait()
        await stream.close()
    assert got == [blob]


async def test_a_gossip_stream_read_for_megabytes_keeps_a_small_window() -> None:
    """While a node validates a peer's messages it stops reading that peer's gossip; what the
    peer sends meanwhile waits in memory, up to the stream's window: two of the largest RPCs
    (p2p/rpc_reader.py), not 16 MiB, however much gossip the stream has carried."""
    topic, count, size = "castnet-test-window", 24, 300 * 1024
    async with loopback_hosts(0x27, 0x28, topics=frozenset({topic})) as (reader, writer):
        subscription = await reader.pubsub.subscribe(topic)
        await writer.pubsub.subscribe(topic)
        await writer.host.connect(PeerInfo(reader.host.get_id(), reader.host.get_addrs()))
        await writer.pubsub.wait_for_mesh(reader.host.get_id(), topic, timeout=30)
        with trio.fail_after(30):
            for i in range(count):  # 7 MiB in all: an unlimited window doubles to 8 MiB
                await writer.pubsub.publish(topic, bytes([i]) * size)
            for _ in range(count):
                await subscription.get()
        conns = reader.host.get_network().connections[writer.host.get_id()]
        targets = [
            s.target_recv_window
            for conn in (conns if isinstance(conns, list) else [conns])
            for s in conn.muxed_conn.streams.values()
        ]
    assert targets and max(targets) <= GOSSIP_WINDOW, targets


async def test_a_peer_that_sends_past_the_window_is_disconnected_and_nothing_piles_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """py-libp2p buffers whatever a peer sends, window or not; castnet closes the connection of
    a peer that sends a stream more than its credit, and the node goes on serving others."""
    read_by: list[Any] = []
    opened = [trio.Event(), trio.Event()]  # a stream of the flooder's, then the honest peer's
    largest = 0

    async def idle(stream: INetStream) -> None:
        read_by.append(stream.muxed_stream)  # type: ignore[attr-defined]
        await stream.read(1)  # then never again
        opened[len(read_by) - 1].set()
        await trio.sleep_forever()

    send, events = trio.open_memory_channel[tuple[str, Any]](64)
    async with loopback_hosts(0x29, 0x2A, 0x2B) as (node, flooder, honest):
        node.host.get_network().register_notifee(PeerEvents(send))
        node.host.set_stream_handler(SINK, idle)
        stream = await open_stream(flooder, node, SINK)
        await stream.write(b"\x01")
        muxed = stream.muxed_stream  # type: ignore[attr-defined]
        chunk = b"\x66" * (32 * 1024)
        frame = struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_DATA, 0, muxed.stream_id, len(chunk))
        with trio.fail_after(30):
            await opened[0].wait()
            with contextlib.suppress(Exception):  # the connection goes away under the flood
                for _ in range(256):  # 8 MiB on a 256 KiB window, flow control ignored
                    await muxed.conn._write_frame(frame + chunk)
                    buffered = read_by[0].conn.stream_buffers.get(read_by[0].stream_id, b"")
                    largest = max(largest, len(buffered))
            async for what, peer in events:  # the node drops the flooder
                if (what, peer) == (DISCONNECTED, flooder.host.get_id()):
                    break
            # the node still serves a well-behaved peer
            await (await open_stream(honest, node, SINK)).write(b"\x01")
            await opened[1].wait()
    assert largest <= DEFAULT_WINDOW_SIZE + 64 * 1024, largest
    said = [r for r in caplog.records if "past" in r.getMessage() and "window" in r.getMessage()]
    assert [(r.name, r.levelname) for r in said] == [("castnet.p2p.muxer", "WARNING")]
