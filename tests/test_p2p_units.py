"""The p2p layer's pure-ish parts: framing limits and timeouts, blob hash checks, held events,
peer scores, the identity file and config validation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from events import kinds as k
from events.author import Author
from events.crypto import LocalKeySigner
from p2p.config import P2PConfig
from p2p.errors import BlobMismatch, FrameTooLarge, IdentityError, ProtocolError, StreamTimeout
from p2p.framing import MSG_BLOB, MessageStream, unpack_message
from p2p.holding import Holding
from p2p.identity import key_path, load_identity, load_or_create_identity, peer_id_of
from p2p.scoring import PeerScores
from tests.conftest import key


class PipeEnd:
    """A trio memory stream seen through framing's `Stream` interface, delivering short reads."""

    def __init__(self, stream: trio.abc.Stream, max_read: int = 7) -> None:
        self.stream = stream
        self.max_read = max_read

    async def read(self, n: int | None = None) -> bytes:
        return await self.stream.receive_some(min(n or self.max_read, self.max_read))

    async def write(self, data: bytes) -> None:
        await self.stream.send_all(data)


def pipe(
    max_frame: int = 1024, timeout: float = 5.0, max_read: int = 7
) -> tuple[MessageStream, MessageStream]:
    left, right = trio.testing.memory_stream_pair()
    return (
        MessageStream(PipeEnd(left, max_read), max_frame, timeout),
        MessageStream(PipeEnd(right, max_read), max_frame, timeout),
    )


async def test_messages_round_trip_over_short_reads() -> None:
    a, b = pipe()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.send, [1, b"x" * 300, "text", [2, 3]])
        assert await b.receive() == [1, b"x" * 300, "text", [2, 3]]


async def test_oversized_frame_is_refused_before_reading_it() -> None:
    a, b = pipe(max_frame=100_000)
    b.max_frame_bytes = 64
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.send, [1, b"y" * 100])
        with pytest.raises(FrameTooLarge):
            await b.receive()
        nursery.cancel_scope.cancel()


async def test_silent_peer_times_out(autojump_clock: trio.testing.MockClock) -> None:
    _, b = pipe(timeout=3.0)
    with pytest.raises(StreamTimeout):
        await b.receive()


async def test_blob_is_checked_against_its_hash_and_size() -> None:
    a, b = pipe(max_frame=4096, max_read=50_000)
    data = bytes(range(256)) * 4000  # ~1 MiB in chunks, read in short pieces
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.send_blob, data)
        assert await b.receive_blob(max_bytes=len(data)) == data
    # a peer announcing one hash and sending other bytes
    a, b = pipe(max_frame=4096)

    async def lie() -> None:
        await a.send([MSG_BLOB, b"\x01" * 32, 5])
        await a.stream.write(b"hello")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lie)
        with pytest.raises(BlobMismatch):
            await b.receive_blob(max_bytes=100)
    # and one announcing more than we accept
    a, b = pipe(max_frame=4096)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.send, [MSG_BLOB, b"\x01" * 32, 51 * 2**20])
        with pytest.raises(FrameTooLarge):
            await b.receive_blob(max_bytes=50 * 2**20)


@given(st.binary(max_size=200))
def test_garbage_is_a_protocol_error_or_a_message(data: bytes) -> None:
    try:
        fields = unpack_message(data)
    except ProtocolError:
        return
    assert isinstance(fields, list) and type(fields[0]) is int


def test_holding_releases_consecutive_runs_and_is_bounded() -> None:
    author = Author(LocalKeySigner(key(1)))
    events = [author.sign(k.OfferWithdrawn("test"), t) for t in range(1, 7)]
    held = Holding(max_events=3, ttl_s=10.0)
    for e in events[2:5]:  # seq 3, 4, 5
        assert held.add(e, now=0.0)
    assert not held.add(events[2], now=0.0)
    held.add(events[5], now=1.0)  # seq 6 evicts seq 3, the oldest
    assert held.evicted == 1
    assert held.pop_run(author.address, 3, now=1.0) == []
    assert [e.seq for e in held.pop_run(author.address, 4, now=1.0)] == [4, 5, 6]
    held.add(events[0], now=1.0)
    assert held.pop_run(author.address, 1, now=20.0) == []  # expired
    assert len(held) == 0


def test_scores_ban_at_threshold_and_decay() -> None:
    scores = PeerScores(threshold=3.0, half_life_s=10.0, ban_s=60.0)
    assert not scores.penalize("p", 0.0)
    assert not scores.penalize("p", 0.1)
    assert math.isclose(scores.points("p", 10.1), 1.0, rel_tol=0.01)
    assert not scores.penalize("p", 10.1)  # decayed: 2 points
    assert scores.penalize("p", 10.1)  # 3 points: banned
    assert scores.is_banned("p", 30.0)
    assert not scores.is_banned("p", 71.0)
    assert scores.points("p", 71.0) == 0.0


def test_identity_is_stable_and_private(tmp_path: Path) -> None:
    first = peer_id_of(load_or_create_identity(tmp_path))
    assert peer_id_of(load_or_create_identity(tmp_path)) == first
    assert key_path(tmp_path).stat().st_mode & 0o077 == 0
    key_path(tmp_path).write_bytes(b"castnet-p2p-secp256k1\nabcd\n")
    with pytest.raises(IdentityError):
        load_identity(tmp_path)
    key_path(tmp_path).write_bytes(b"something else")
    with pytest.raises(IdentityError):
        load_identity(tmp_path)


def test_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        P2PConfig(network="a/b")
    with pytest.raises(ValueError):
        P2PConfig(degree=2, degree_low=4)
    assert P2PConfig().network == "castnet-dev"
