"""castnet's yamux frame path (p2p/wire.py) on real libp2p hosts on 127.0.0.1: streams carry
every size whole and in order, half-close and reset reach the reader, and each kind of frame a
peer may send is treated as the protocol says: a SYN for a taken stream id is refused with RST, a
PING is answered, GO_AWAY, a frame of unknown type, an oversized frame and a frame whose body
stalls end that peer's connection (and only it)."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import trio
import trio.testing
from libp2p.custom_types import TProtocol
from libp2p.io.trio import TrioTCPStream
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.network.stream.net_stream import INetStream
from libp2p.stream_muxer.exceptions import MuxedStreamReset
from libp2p.stream_muxer.yamux.yamux import (
    FLAG_ACK,
    FLAG_FIN,
    FLAG_SYN,
    MAX_WINDOW_SIZE,
    TYPE_DATA,
    TYPE_GO_AWAY,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    Yamux,
)

from p2p import wire
from p2p.peers import DISCONNECTED, PeerEvents
from tests.p2p_hosts import loopback_hosts, open_stream

ECHO = TProtocol("/castnet-test/echo/1")
SINK = TProtocol("/castnet-test/sink/1")
HEADER = struct.Struct("!BBHII")


async def echo(stream: INetStream) -> None:
    """Sends back what it reads until the writer half-closes, then closes its side."""
    while data := await _read_some(stream):
        await stream.write(data)
    await stream.close()


async def _read_some(stream: INetStream) -> bytes:
    try:
        return await stream.read(1 << 20)
    except Exception:  # EOF
        return b""


async def sink(stream: INetStream) -> None:
    await stream.read(1)
    await trio.sleep_forever()


def test_the_lean_path_is_the_one_in_use() -> None:
    for (cls, name), method in wire._LEAN.items():
        assert getattr(cls, name) is method, name


async def test_streams_carry_every_size_whole_and_end_with_the_writer() -> None:
    sizes = [1, 11, 12, 13, 300, 65_524, 65_536, 200_000, MAX_WINDOW_SIZE // 8]
    async with loopback_hosts(0x41, 0x42) as (a, b):
        b.host.set_stream_handler(ECHO, echo)
        for size in sizes:
            stream = await open_stream(a, b, ECHO)
            sent = bytes((i * 7 + size) % 251 for i in range(size))
            got = bytearray()
            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:

                    async def write(stream: INetStream = stream, sent: bytes = sent) -> None:
                        await stream.write(sent)
                        await stream.close()  # FIN: the echo side ends its loop

                    nursery.start_soon(write)
                    while data := await _read_some(stream):
                        got += data
            assert bytes(got) == sent, size


async def test_frames_sent_together_are_all_delivered() -> None:
    """Two DATA frames in one secure-session message (a peer may coalesce writes)."""
    async with loopback_hosts(0x43, 0x44) as (a, b):
        b.host.set_stream_handler(ECHO, echo)
        stream = await open_stream(a, b, ECHO)
        muxed = stream.muxed_stream  # type: ignore[attr-defined]
        one, two = b"first frame", b"second frame"
        frames = b"".join(HEADER.pack(0, TYPE_DATA, 0, muxed.stream_id, len(p)) + p
                          for p in (one, two))  # fmt: skip
        muxed.send_window -= len(one) + len(two)
        await muxed.conn._write_frame(frames)
        got = b""
        with trio.fail_after(10):
            while len(got) < len(one + two):
                got += await stream.read(100)
        assert got == one + two


async def _held_stream(a: Any, b: Any) -> tuple[INetStream, INetStream]:
    """A stream from A to B, and B's end of it once B has read its first byte."""
    held: list[INetStream] = []
    opened = trio.Event()

    async def hold(stream: INetStream) -> None:
        held.append(stream)
        opened.set()
        await trio.sleep_forever()

    b.host.set_stream_handler(SINK, hold)
    stream = await open_stream(a, b, SINK)
    await stream.write(b"x")
    with trio.fail_after(10):
        await opened.wait()
        assert await held[0].read(1) == b"x"
    return stream, held[0]


async def _read_until_it_ends(stream: INetStream, ended: list[BaseException]) -> None:
    try:
        while await stream.read(10):
            pass
    except Exception as exc:
        ended.append(exc)


@pytest.mark.parametrize("side", ["the peer", "another task here"])
async def test_a_reset_ends_a_waiting_read(side: str) -> None:
    """A read waiting for data ends when the stream is reset, by the peer or by another task
    on this side (py-libp2p forgot the waiting reader's event then: it waited forever)."""
    async with loopback_hosts(0x45, 0x46) as (a, b):
        stream, theirs = await _held_stream(a, b)
        ended: list[BaseException] = []
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_read_until_it_ends, theirs, ended)
                await trio.testing.wait_all_tasks_blocked()  # the read waits
                await (stream if side == "the peer" else theirs).reset()
        assert len(ended) == 1
        assert isinstance(ended[0], MuxedStreamReset | StreamEOF | StreamReset), ended


async def test_a_fin_on_an_ack_frame_ends_the_stream() -> None:
    """yamux lets any frame carry FIN; py-libp2p ignored it on ACK frames, so a reader whose
    peer acknowledged and closed in one frame waited forever."""
    async with loopback_hosts(0x4E, 0x4F) as (a, b):
        stream, theirs = await _held_stream(a, b)
        sid = theirs.muxed_stream.stream_id  # type: ignore[attr-defined]
        ended: list[BaseException] = []
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_read_until_it_ends, stream, ended)
                await trio.testing.wait_all_tasks_blocked()
                await theirs.muxed_stream.conn._write_frame(  # type: ignore[attr-defined]
                    HEADER.pack(0, TYPE_WINDOW_UPDATE, FLAG_ACK | FLAG_FIN, sid, 0)
                )
        assert len(ended) == 1 and isinstance(ended[0], StreamEOF), ended


async def test_a_syn_for_a_stream_id_in_use_is_refused_with_rst() -> None:
    async with loopback_hosts(0x47, 0x48) as (a, b):
        b.host.set_stream_handler(SINK, sink)
        stream = await open_stream(a, b, SINK)
        await stream.write(b"x")
        muxed = stream.muxed_stream  # type: ignore[attr-defined]
        ended: list[BaseException] = []
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:  # a read that the RST ends
                nursery.start_soon(_read_until_it_ends, stream, ended)
                await trio.testing.wait_all_tasks_blocked()
                await muxed.conn._write_frame(
                    HEADER.pack(0, TYPE_WINDOW_UPDATE, FLAG_SYN, muxed.stream_id, 0)
                )
        assert muxed.reset_received and len(ended) == 1  # the RST came back for that id
        # the connection is still up: a new stream works
        b.host.set_stream_handler(ECHO, echo)
        other = await open_stream(a, b, ECHO)
        await other.write(b"still here")
        with trio.fail_after(10):
            assert await other.read(100) == b"still here"


async def test_a_ping_is_answered_and_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PING is answered by the peer's reader and its answer timed by this side's (py-libp2p's
    own RTT loop is held back, so the test's ping is the only one)."""

    async def no_rtt_loop(self: Yamux) -> None:
        await trio.sleep_forever()

    monkeypatch.setattr(Yamux, "_measure_rtt_loop", no_rtt_loop)
    async with loopback_hosts(0x49, 0x4A) as (a, b):
        b.host.set_stream_handler(SINK, sink)
        stream = await open_stream(a, b, SINK)
        conn = stream.muxed_stream.conn  # type: ignore[attr-defined]
        conn._ping_event = answered = trio.Event()
        conn._ping_sent_time = trio.current_time()
        await conn._write_frame(HEADER.pack(0, TYPE_PING, FLAG_SYN, 0, 7))
        with trio.fail_after(10):
            await answered.wait()
        assert 0 < conn.rtt() < 5


async def test_reads_take_ahead_and_hand_out_the_rest_in_order() -> None:
    """A connection's socket reads take what is there (up to 64 KiB); the next reads are
    served from it, in order and never more than asked, and the end comes after them."""
    left, right = trio.socket.socketpair()
    ours, theirs = TrioTCPStream(trio.SocketStream(left)), trio.SocketStream(right)
    sent = bytes(range(256)) * 1024  # 256 KiB

    async def send() -> None:
        await theirs.send_all(sent)
        await theirs.send_eof()

    got = bytearray()
    sizes = [2, 1, 100_000, 3, 70_000, None, 12]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            for i in range(10_000):
                size = sizes[i % len(sizes)]
                chunk = await ours.read(size)
                if not chunk:
                    break
                assert len(chunk) <= (size or wire.READ_AHEAD)
                got += chunk
    assert bytes(got) == sent
    assert await ours.read(10) == b""
    await ours.close()
    await theirs.aclose()


def _raw(frame_type: int, flags: int, length: int, body: bytes = b"") -> bytes:
    return HEADER.pack(0, frame_type, flags, 1, length) + body


@pytest.mark.parametrize(
    ("name", "frame", "said"),
    [
        ("go-away", _raw(TYPE_GO_AWAY, 0, 0), None),
        ("unknown type", _raw(9, 0, 0), "unknown type 9"),
        ("oversized", _raw(TYPE_DATA, FLAG_ACK, MAX_WINDOW_SIZE + 1), "-byte DATA frame"),
        ("stalled body", _raw(TYPE_DATA, 0, 1000, b"only ten b"), "stalled"),
    ],
)
async def test_a_frame_that_ends_the_connection_ends_only_that_one(
    name: str, frame: bytes, said: str | None, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(wire, "_BODY_TIMEOUT_S", 0.5)
    send, events = trio.open_memory_channel[tuple[str, Any]](64)
    async with loopback_hosts(0x4B, 0x4C, 0x4D) as (node, peer, honest):
        node.host.get_network().register_notifee(PeerEvents(send))
        node.host.set_stream_handler(ECHO, echo)
        stream = await open_stream(peer, node, ECHO)
        await stream.write(b"x")
        with trio.fail_after(10):
            assert await stream.read(1) == b"x"
            await stream.muxed_stream.conn._write_frame(frame)  # type: ignore[attr-defined]
            async for what, who in events:
                if (what, who) == (DISCONNECTED, peer.host.get_id()):
                    break
            other = await open_stream(honest, node, ECHO)  # the node serves others still
            await other.write(b"ok")
            assert await other.read(2) == b"ok"
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "castnet.p2p.wire" and r.levelname == "WARNING"]  # fmt: skip
    if said is None:
        assert warnings == [], name
    else:
        assert len(warnings) == 1 and said in warnings[0], (name, warnings)
