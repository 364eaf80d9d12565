"""Gossip under bursts: one peer's messages are stored in the order they arrived, messages that
wait for a predecessor neither starve the validators nor stop the peer's stream from being read,
and the buffered pubsub reader splits frames correctly. A raw gossipsub host (no validator)
sends the messages; topology: sender - A - B."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import trio
from libp2p.io.exceptions import IncompleteReadError, MessageTooLarge

from events.author import Author
from events.crypto import LocalKeySigner
from p2p.config import P2PConfig
from p2p.gossip import encode_batch
from p2p.localnet import connect, open_local_nodes
from p2p.rpc_reader import RpcReader
from tests.conftest import key
from tests.test_p2p_bad_input import attacker_of, offer

# periodic sync out of the way, and few validators: what waits must not hold one
QUIET = P2PConfig(sync_interval_s=600.0, max_validators=16)


class _Chunks:
    """A stream that returns the given chunks, then EOF (an empty read)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)

    async def read(self, n: int | None = None) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


async def test_frame_reader_splits_and_joins_frames() -> None:
    frames = [b"a" * 3, b"", b"b" * 300, b"c" * 70_000]
    wire = b"".join(_varint(len(f)) + f for f in frames)
    # cut everywhere: inside a length prefix, inside a body, and several frames in one chunk
    cuts = [1, 2, 5, 7, 300, 310, 40_000, len(wire)]
    chunks = [wire[a:b] for a, b in zip([0, *cuts], cuts, strict=False) if wire[a:b]]
    reader = RpcReader(_Chunks(chunks), max_frame=100_000)  # type: ignore[arg-type]
    assert [await reader.next() for _ in frames] == frames
    with pytest.raises(IncompleteReadError):
        await reader.next()


async def test_frame_reader_refuses_an_oversized_frame_before_reading_it() -> None:
    reader = RpcReader(_Chunks([_varint(2_000_000) + b"x"]), max_frame=1024)  # type: ignore[arg-type]
    with pytest.raises(MessageTooLarge):
        await reader.next()


async def test_burst_from_one_peer_is_stored_in_arrival_order(tmp_path: Path) -> None:
    author = Author(LocalKeySigner(key(21)))
    events = [author.sign(offer(i), i) for i in range(1, 61)]
    async with open_local_nodes(tmp_path, 2, QUIET) as (a, b):
        await connect([a, b], [(0, 1)])
        async with attacker_of(a) as sender:
            for event in events:  # one event per message, back to back: several per read
                await sender.pubsub.publish(a.gossip.topic, encode_batch([event.raw]))
            with trio.fail_after(20):
                await a.wait_until(lambda: a.event_count() == len(events))
                await b.wait_until(lambda: b.event_count() == len(events))
        # every append found its predecessor already stored: none waited, none came by sync
        assert a.ingest.counts["gap"] == 0
        assert a.sync.stored == 0 and b.sync.stored == 0


async def test_messages_waiting_for_predecessors_do_not_block_them(tmp_path: Path) -> None:
    """100 messages in reverse chain order: each waits for the one after it on the wire. With
    16 validators and 8 messages per peer in validation, the waiting ones must give their places
    back, or the predecessors are never read and everything comes by sync seconds later."""
    author = Author(LocalKeySigner(key(22)))
    events = [author.sign(offer(i), i) for i in range(1, 101)]
    config = dataclasses.replace(QUIET, gap_wait_s=30.0)  # a stall would show as a timeout
    async with open_local_nodes(tmp_path, 2, config) as (a, b):
        await connect([a, b], [(0, 1)])
        async with attacker_of(a) as sender:
            for event in reversed(events):
                await sender.pubsub.publish(a.gossip.topic, encode_batch([event.raw]))
                await trio.sleep(0)
            with trio.fail_after(20):
                await a.wait_until(lambda: a.event_count() == len(events))
                await b.wait_until(lambda: b.event_count() == len(events))
        assert a.ingest.counts["gap"] >= 90  # they did arrive ahead of their predecessors
        assert a.sync.stored == 0 and b.sync.stored == 0  # and gossip alone delivered them
        assert len(a.ingest.holding) == 0
