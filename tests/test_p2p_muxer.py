"""Yamux credit comes back in half-window batches (p2p/muxer.py): a stream read in many small reads
costs the reader a WINDOW_UPDATE frame per half window read (16 MiB window), not one per read,
and a transfer larger than the window still completes. Two real libp2p hosts on 127.0.0.1."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import trio
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.stream.net_stream import INetStream
from libp2p.peer.peerinfo import PeerInfo
from libp2p.stream_muxer.yamux.yamux import MAX_WINDOW_SIZE, YamuxStream

from p2p.config import P2PConfig
from p2p.host import running_host
from p2p.localnet import LOOPBACK

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
    # the window granted at the first read, then credit once per half window read
    assert 2 <= count <= 1 + TOTAL // (MAX_WINDOW_SIZE // 2) + 1, count
