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
from libp2p.crypto.secp256k1 import create_new_key_pair
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

from p2p.config import P2PConfig
from p2p.framing import MSG_BLOB, MessageStream
from p2p.host import running_host
from p2p.localnet import LOOPBACK
from p2p.rpc_reader import GOSSIP_WINDOW

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

    config = P2PConfig(listen=(LOOPBACK,))
    async with (
        running_host(create_new_key_pair(b"\x21" * 32), config, frozenset()) as reader,
        running_host(create_new_key_pair(b"\x22" * 32), config, frozenset()) as writer,
    ):
        reader.host.set_stream_handler(SINK, sink)
        await writer.host.connect(PeerInfo(reader.host.get_id(), reader.host.get_addrs()))
        stream = await writer.host.new_stream(reader.host.get_id(), [SINK])
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
    first_read, release = trio.Event(), trio.Event()
    received = 0
    read_by: list[Any] = []

    async def slow(stream: INetStream) -> None:
        nonlocal received
        read_by.append(stream.muxed_stream)  # type: ignore[attr-defined]
        received += len(await stream.read(100))  # one small request, then a long pause
        first_read.set()
        await release.wait()
        while received < TOTAL:
            data = await stream.read(WRITE)
            if not data:
                break
            received += len(data)

    config = P2PConfig(listen=(LOOPBACK,))
    async with (
        running_host(create_new_key_pair(b"\x23" * 32), config, frozenset()) as reader,
        running_host(create_new_key_pair(b"\x24" * 32), config, frozenset()) as writer,
    ):
        reader.host.set_stream_handler(SINK, slow)
        await writer.host.connect(PeerInfo(reader.host.get_id(), reader.host.get_addrs()))
        stream = await writer.host.new_stream(reader.host.get_id(), [SINK])
        await stream.write(b"\x01" * 100)
        with trio.fail_after(30):
            await first_read.wait()
            await trio.sleep(0.2)  # any update the read caused has arrived
        credit = stream.muxed_stream.send_window  # type: ignore[attr-defined]
        assert credit <= DEFAULT_WINDOW_SIZE, credit  # 256 KiB, less the request
        release.set()
        with trio.fail_after(60):
            for _ in range(TOTAL // WRITE):
                await stream.write(b"\x5a" * WRITE)
            while received < TOTAL:
                await trio.sleep(0.01)
        # a reader that keeps up ends with the full window granted
        assert read_by[0].target_recv_window == MAX_WINDOW_SIZE
        await stream.close()


async def test_a_reader_that_accepts_a_blob_credits_the_sender_for_all_of_it_at_once() -> None:
    size = 3 * 1024 * 1024
    blob = bytes(range(256)) * (size // 256)
    got: list[bytes] = []

    async def accept(stream: INetStream) -> None:
        got.append(await MessageStream(stream, 1024, 30).receive_blob(size))

    config = P2PConfig(listen=(LOOPBACK,))
    async with (
        running_host(create_new_key_pair(b"\x25" * 32), config, frozenset()) as reader,
        running_host(create_new_key_pair(b"\x26" * 32), config, frozenset()) as writer,
    ):
        reader.host.set_stream_handler(SINK, accept)
        await writer.host.connect(PeerInfo(reader.host.get_id(), reader.host.get_addrs()))
        stream = await writer.host.new_stream(reader.host.get_id(), [SINK])
        sender = MessageStream(stream, 1024, 30)
        await sender.send([MSG_BLOB, keccak_256(blob).digest(), size])  # announced, not sent
        with trio.fail_after(30):
            while stream.muxed_stream.send_window < size:  # type: ignore[attr-defined]
                await trio.sleep(0.01)  # credit for the whole blob, before any of it is read
            for start in range(0, size, WRITE):
                await stream.write(blob[start : start + WRITE])
            while not got:
                await trio.sleep(0.01)
        await stream.close()
    assert got == [blob]


async def test_a_gossip_stream_read_for_megabytes_keeps_a_small_window() -> None:
    """While a node validates a peer's messages it stops reading that peer's gossip; what the
    peer sends meanwhile waits in memory, up to the stream's window: two of the largest RPCs
    (p2p/rpc_reader.py), not 16 MiB, however much gossip the stream has carried."""
    topic, count, size = "castnet-test-window", 24, 300 * 1024
    config = P2PConfig(listen=(LOOPBACK,))
    async with (
        running_host(create_new_key_pair(b"\x27" * 32), config, frozenset({topic})) as reader,
        running_host(create_new_key_pair(b"\x28" * 32), config, frozenset({topic})) as writer,
    ):
        subscription = await reader.pubsub.subscribe(topic)
        await writer.pubsub.subscribe(topic)
        await writer.host.connect(PeerInfo(reader.host.get_id(), reader.host.get_addrs()))
        with trio.fail_after(30):
            while reader.host.get_id() not in writer.pubsub.peer_topics.get(topic, set()):
                await trio.sleep(0.05)
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
    largest = 0

    async def idle(stream: INetStream) -> None:
        read_by.append(stream.muxed_stream)  # type: ignore[attr-defined]
        await stream.read(1)  # then never again
        await trio.sleep_forever()

    config = P2PConfig(listen=(LOOPBACK,))
    async with (
        running_host(create_new_key_pair(b"\x29" * 32), config, frozenset()) as node,
        running_host(create_new_key_pair(b"\x2a" * 32), config, frozenset()) as flooder,
        running_host(create_new_key_pair(b"\x2b" * 32), config, frozenset()) as honest,
    ):
        node.host.set_stream_handler(SINK, idle)
        await flooder.host.connect(PeerInfo(node.host.get_id(), node.host.get_addrs()))
        stream = await flooder.host.new_stream(node.host.get_id(), [SINK])
        await stream.write(b"\x01")
        muxed = stream.muxed_stream  # type: ignore[attr-defined]
        chunk = b"\x66" * (32 * 1024)
        frame = struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_DATA, 0, muxed.stream_id, len(chunk))
        with trio.fail_after(30):
            while not read_by:
                await trio.sleep(0.01)
            with contextlib.suppress(Exception):  # the connection goes away under the flood
                for _ in range(256):  # 8 MiB on a 256 KiB window, flow control ignored
                    await muxed.conn._write_frame(frame + chunk)
                    buffered = read_by[0].conn.stream_buffers.get(read_by[0].stream_id, b"")
                    largest = max(largest, len(buffered))
            while node.host.get_network().connections.get(flooder.host.get_id()):
                await trio.sleep(0.05)
            # the node still serves a well-behaved peer
            await honest.host.connect(PeerInfo(node.host.get_id(), node.host.get_addrs()))
            other = await honest.host.new_stream(node.host.get_id(), [SINK])
            await other.write(b"\x01")
            while len(read_by) < 2:
                await trio.sleep(0.01)
    assert largest <= DEFAULT_WINDOW_SIZE + 64 * 1024, largest
    said = [r for r in caplog.records if "past" in r.getMessage() and "window" in r.getMessage()]
    assert [(r.name, r.levelname) for r in said] == [("castnet.p2p.muxer", "WARNING")]
