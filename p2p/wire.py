"""A message's path through TCP and yamux without py-libp2p's per-frame overhead.

A gossip event crosses a node as about six yamux frames in and five out, each in a Noise message
of its own, so whatever py-libp2p spends per frame is paid on every event on every node:
- TCP: each Noise message was read with two `recv` calls (its 2-byte length, then its body) and a
  third that found nothing and waited. A connection's reads now take up to 64 KiB at once and
  serve the next reads from what is left (`_buffered_read`).
- yamux: py-libp2p 0.8.1's reader reads each frame in two awaited reads (the 12-byte header,
  then the body under a fresh timeout scope that looks up an environment variable), and its
  reader, `read_stream` and `_write_frame` format several debug lines per frame whether debug
  logging is on or not (f-strings are built before `logger.debug` looks at the level).

`handle_incoming` here reads the secure session a whole Noise message at a time and cuts frames
from its own buffer (the body timeout only when a frame's body is still on its way), and treats
every frame type as py-libp2p does: SYN opens a stream (or is refused with RST when the id is
taken), ACK, FIN and RST on either DATA or WINDOW_UPDATE, PING answered, GO_AWAY and any read
error end the connection through py-libp2p's own teardown. `write` and `read_stream` take their
common cases (a message that fits the send window in one frame; a stream with data buffered or
to wait for) without logging and defer every other case to py-libp2p's code. The muxer's
locks are taken only when held: every other holder changes the same fields without an await
(bench/mux_bench.py measures all this against py-libp2p's own path in one run).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from libp2p.io.exceptions import ConnectionClosedError, IncompleteReadError, IOException
from libp2p.io.trio import TrioTCPStream
from libp2p.stream_muxer.yamux import yamux as _yamux
from libp2p.stream_muxer.yamux.yamux import (
    FLAG_ACK,
    FLAG_FIN,
    FLAG_RST,
    FLAG_SYN,
    HEADER_SIZE,
    MAX_MESSAGE_SIZE,
    MAX_WINDOW_SIZE,
    TYPE_DATA,
    TYPE_GO_AWAY,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    Yamux,
    YamuxStream,
)

from p2p.muxer import WindowExceeded

log = logging.getLogger("castnet.p2p.wire")
_HEADER = struct.Struct("!BBHII")  # version, type, flags, stream id, length
# py-libp2p's bound on the arrival of a frame's body (60 s, or PY_YAMUX_DATA_READ_TIMEOUT)
_BODY_TIMEOUT_S = _yamux._yamux_data_read_timeout()
READ_AHEAD = 64 * 1024  # bytes a TCP read may take beyond what was asked for
# how a connection ends (closed, reset, cut short): the reader stops without a warning
_ENDED = (IOException, OSError, EOFError, trio.ClosedResourceError, trio.BrokenResourceError)


async def _buffered_read(self: TrioTCPStream, n: int | None = None) -> bytes:
    """TrioTCPStream.read, taking up to READ_AHEAD bytes from the socket at once and serving
    later reads from the rest (errors mapped as py-libp2p maps them)."""
    if n == 0:
        return b""
    async with self.read_lock:  # one reader at a time, so the bytes keep their order
        ahead: bytearray | None = getattr(self, "castnet_ahead", None)
        if not ahead:
            try:
                data = await self.stream.receive_some(max(n or 0, READ_AHEAD))
            except trio.BrokenResourceError as error:
                raise ConnectionClosedError(f"TCP connection reset by remote peer: {error}",
                                            transport="tcp") from error  # fmt: skip
            except trio.ClosedResourceError:
                return b""  # closed here: end of stream for the layers above
            if n is None or len(data) <= n:
                return data
            self.castnet_ahead = ahead = bytearray(data)  # type: ignore[attr-defined]
        return _take(ahead, n)


def _take(buffer: bytearray, n: int | None) -> bytes:
    """Up to `n` bytes off the front of `buffer` (all of it for None or a negative `n`)."""
    if n is None or n < 0 or n >= len(buffer):
        data = bytes(buffer)
        buffer.clear()
    else:
        data = bytes(buffer[:n])
        del buffer[:n]
    return data


class _Frames:
    """The secure session's bytes, read a message at a time, cut into frames."""

    __slots__ = ("_buf", "_conn")

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._buf = bytearray()

    async def _more(self, n: int) -> None:
        while len(self._buf) < n:
            chunk = await self._conn.read()  # what the session holds, else its next message
            if not chunk:
                raise IncompleteReadError("connection ended inside a yamux frame", n,
                                          len(self._buf))  # fmt: skip
            self._buf += chunk

    async def header(self) -> tuple[int, int, int, int]:
        if len(self._buf) < HEADER_SIZE:
            await self._more(HEADER_SIZE)
        _, typ, flags, sid, length = _HEADER.unpack_from(self._buf)
        del self._buf[:HEADER_SIZE]
        return typ, flags, sid, length

    async def body(self, length: int) -> bytes:
        if len(self._buf) < length:
            with trio.fail_after(_BODY_TIMEOUT_S):
                await self._more(length)
        data = bytes(self._buf[:length])
        del self._buf[:length]
        return data


def _arrived(conn: Yamux, sid: int, flags: int, data: bytes, window: int) -> None:
    """A DATA or WINDOW_UPDATE frame (not SYN) for stream `sid`: its data, its credit, its
    FIN or RST. A frame for a stream this side no longer has is dropped, as py-libp2p does."""
    stream = conn.streams.get(sid)
    if stream is None:
        return
    if data:
        conn.stream_buffers[sid].extend(data)  # castnet's buffer refuses bytes past the window
        stream.recv_window = max(0, stream.recv_window - len(data))
    if window:
        stream.send_window += window
    if flags & FLAG_FIN:
        stream.recv_closed = True
        if stream.send_closed:
            stream.closed = True
    if flags & FLAG_RST:
        stream.closed = stream.reset_received = True
    event = conn.stream_events.get(sid)
    if event is not None and (data or flags & (FLAG_FIN | FLAG_RST)):
        event.set()
    if stream.closed:
        conn._finalize_stream_locked(stream, fully_closed=True)


async def _apply(conn: Yamux, sid: int, flags: int, data: bytes, window: int) -> None:
    """`_arrived` under the muxer's lock if someone holds it (Yamux.close holds it across a
    write); at once when it is free, since no other holder awaits between its reads and writes."""
    if conn.streams_lock.locked():
        async with conn.streams_lock:
            _arrived(conn, sid, flags, data, window)
    else:
        _arrived(conn, sid, flags, data, window)


async def _opened(conn: Yamux, sid: int, typ: int, flags: int, data: bytes, length: int) -> None:
    """A SYN: the peer opens stream `sid` (refused with RST if this side has it already)."""
    async with conn.streams_lock:
        taken = sid in conn.streams
        if not taken:
            stream = YamuxStream(sid, conn, False)
            conn.streams[sid] = stream
            conn.stream_buffers[sid] = bytearray()
            conn.stream_events[sid] = trio.Event()
            if typ == TYPE_WINDOW_UPDATE:
                stream.send_window += length
            _arrived(conn, sid, flags, data, 0)
    if taken:
        await conn._write_frame(_HEADER.pack(0, TYPE_WINDOW_UPDATE, FLAG_RST, sid, 0))
        return
    if not flags & FLAG_RST:  # a stream reset on arrival is handed over, but not acknowledged
        await conn._write_frame(_HEADER.pack(0, TYPE_WINDOW_UPDATE, FLAG_ACK, sid, 0))
    await conn.new_stream_send_channel.send(stream)


async def handle_incoming(self: Yamux) -> None:
    """Read frames until the connection ends, then tear it down (py-libp2p's teardown)."""
    frames = _Frames(self.secured_conn)
    try:
        while not self.event_shutting_down.is_set():
            typ, flags, sid, length = await frames.header()
            if typ == TYPE_DATA:
                if length > MAX_WINDOW_SIZE:
                    log.warning("peer %s announced a %d-byte DATA frame: closing the connection",
                                self.peer_id, length)  # fmt: skip
                    break
                data = await frames.body(length) if length else b""
                if flags & FLAG_SYN:
                    await _opened(self, sid, typ, flags, data, length)
                    continue
                try:
                    await _apply(self, sid, flags, data, 0)
                except WindowExceeded as exc:  # the muxer's teardown is under way
                    log.debug("frame for stream %d of %s refused: %s", sid, self.peer_id, exc)
                    await _end_stream(self, sid)
            elif typ == TYPE_WINDOW_UPDATE:
                if flags & FLAG_SYN:
                    await _opened(self, sid, typ, flags, b"", length)
                else:
                    await _apply(self, sid, flags, b"", length)
            elif typ == TYPE_PING:
                if flags & FLAG_SYN:
                    await self._write_frame(_HEADER.pack(0, TYPE_PING, FLAG_ACK, 0, length))
                elif flags & FLAG_ACK:
                    rtt = trio.current_time() - self._ping_sent_time
                    self._rtt = rtt if self._rtt == 0.0 else (self._rtt + rtt) / 2
                    self._ping_event.set()
            elif typ == TYPE_GO_AWAY:
                log.debug("peer %s went away (code %d)", self.peer_id, length)
                break
            else:
                log.warning("peer %s sent a yamux frame of unknown type %d: closing the"
                            " connection", self.peer_id, typ)  # fmt: skip
                break
    except trio.TooSlowError:
        log.warning("peer %s sent part of a yamux frame and stalled: closing the connection",
                    self.peer_id)  # fmt: skip
    except _ENDED as exc:  # the connection ended or broke: py-libp2p's teardown follows
        log.debug("yamux reader for %s ends: %s: %s", self.peer_id, type(exc).__name__, exc)
    except Exception as exc:  # anything else (a session that fails to decrypt): said once
        log.warning("yamux reader for %s failed, closing the connection: %r", self.peer_id, exc)
    self.event_shutting_down.set()
    await self._cleanup_on_error()


async def _end_stream(conn: Yamux, sid: int) -> None:
    async with conn.streams_lock:
        stream = conn.streams.get(sid)
        if stream is not None:
            stream.recv_closed = True
            stream.closed = stream.closed or stream.send_closed
            event = conn.stream_events.get(sid)
            if event is not None:
                event.set()
            conn._finalize_stream_locked(stream, fully_closed=stream.closed)


def _waking(finalize: Callable[..., None]) -> Any:
    """py-libp2p's `_finalize_stream_locked`, waking the stream's reader before it forgets the
    stream's event: a task reading a stream that another task resets here waited forever."""

    def waking(self: Yamux, stream: YamuxStream, *, fully_closed: bool) -> None:
        if fully_closed:
            event = self.stream_events.get(stream.stream_id)
            if event is not None:
                event.set()
        finalize(self, stream, fully_closed=fully_closed)

    return waking


async def _write_frame(self: Yamux, data: bytes) -> None:
    """One frame onto the secure session, writers in turn (a socket write is a trio
    checkpoint already)."""
    async with self._write_lock:
        await self.secured_conn.write(data)


_MAX_BODY = MAX_MESSAGE_SIZE - HEADER_SIZE


def _lean_write(write: Callable[[YamuxStream, bytes], Awaitable[None]]) -> Any:
    async def lean(self: YamuxStream, data: bytes) -> None:
        size = len(data)
        if (self.send_closed or self.closed or not 0 < size <= _MAX_BODY
                or self.send_window < size):  # fmt: skip
            return await write(self, data)  # py-libp2p's: errors, many frames, window waits
        self.send_window -= size
        await self.conn._write_frame(_HEADER.pack(0, TYPE_DATA, 0, self.stream_id, size) + data)

    return lean


def _lean_read_stream(read_stream: Callable[..., Awaitable[bytes]]) -> Any:
    async def lean(self: Yamux, stream_id: int, n: int = -1) -> bytes:
        while True:
            stream = self.streams.get(stream_id)
            buffer = self.stream_buffers.get(stream_id)
            if (stream is None or buffer is None or stream.closed or stream.reset_received
                    or self.event_shutting_down.is_set()
                    or (stream.recv_closed and not buffer)):  # fmt: skip
                return await read_stream(self, stream_id, n)  # py-libp2p's: ends, errors
            if buffer:
                break
            event = self.stream_events.get(stream_id)
            if event is None:
                return await read_stream(self, stream_id, n)
            await event.wait()
            if self.stream_events.get(stream_id) is event:
                self.stream_events[stream_id] = trio.Event()
        return _take(buffer, n)

    return lean


_STOCK: dict[tuple[type, str], Any] = {
    (TrioTCPStream, "read"): TrioTCPStream.read,
    (Yamux, "handle_incoming"): Yamux.handle_incoming,
    (Yamux, "_write_frame"): Yamux._write_frame,
    (Yamux, "read_stream"): Yamux.read_stream,
    (Yamux, "_finalize_stream_locked"): Yamux._finalize_stream_locked,
    (YamuxStream, "write"): YamuxStream.write,
}
_LEAN: dict[tuple[type, str], Any] = {
    (TrioTCPStream, "read"): _buffered_read,
    (Yamux, "handle_incoming"): handle_incoming,
    (Yamux, "_write_frame"): _write_frame,
    (Yamux, "read_stream"): _lean_read_stream(Yamux.read_stream),
    (Yamux, "_finalize_stream_locked"): _waking(Yamux._finalize_stream_locked),
    (YamuxStream, "write"): _lean_write(YamuxStream.write),
}


def use_lean_wire(lean: bool = True) -> None:
    """Use the lean path on py-libp2p's TCP streams and yamux connections and streams (or,
    False, py-libp2p's own again: the benches compare the two, on connections made after the
    switch; a connection made before it would lose the bytes its reads took ahead)."""
    for (cls, name), method in (_LEAN if lean else _STOCK).items():
        setattr(cls, name, method)
