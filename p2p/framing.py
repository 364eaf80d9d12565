"""Length-framed messages and hash-checked blobs over a libp2p stream.

A frame is a 4-byte big-endian length and that many bytes; a message is one frame holding a
positional msgpack array `[kind, ...]`. Every read has a size limit and a timeout, because the
other end is untrusted. A blob is announced by `[BLOB, keccak256, size]` and then sent raw in
chunks; the receiver checks size and hash before handing it on.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgpack
import trio
from libp2p.io.exceptions import IOException
from libp2p.stream_muxer.exceptions import MuxedStreamError
from sha3 import keccak_256

from p2p.errors import BlobMismatch, FrameTooLarge, ProtocolError, StreamClosed, StreamTimeout
from p2p.muxer import expect_bytes

HEADER = 4
CHUNK = 256 * 1024
MSG_BLOB = 0x7B  # kind of the message announcing a blob
_STREAM_ERRORS = (IOException, MuxedStreamError, EOFError, trio.BrokenResourceError)


class Stream(Protocol):
    """What framing needs of a stream; libp2p's INetStream has it, and so does a test double."""

    async def read(self, n: int | None = None) -> bytes: ...
    async def write(self, data: bytes) -> None: ...


async def read_exactly(stream: Stream, n: int, timeout: float) -> bytes:
    """`n` bytes; `stream.read` may return fewer, so loop. Each read must make progress in time."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        with trio.move_on_after(timeout) as scope:
            try:
                part = await stream.read(n - got)
            except _STREAM_ERRORS as exc:
                raise StreamClosed(f"stream ended after {got} of {n} bytes ({exc!r})") from None
        if scope.cancelled_caught:
            raise StreamTimeout(f"no data for {timeout:g} s after {got} of {n} bytes")
        if not part:
            raise StreamClosed(f"stream ended after {got} of {n} bytes")
        parts.append(part)
        got += len(part)
    return b"".join(parts)


async def write_all(stream: Stream, data: bytes, timeout: float) -> None:
    with trio.move_on_after(timeout) as scope:
        try:
            await stream.write(data)
        except _STREAM_ERRORS as exc:
            raise StreamClosed(f"stream closed while writing ({exc!r})") from None
    if scope.cancelled_caught:
        raise StreamTimeout(f"peer did not take {len(data)} bytes in {timeout:g} s")


async def write_frame(stream: Stream, payload: bytes, timeout: float) -> None:
    await write_all(stream, len(payload).to_bytes(HEADER, "big") + payload, timeout)


async def read_frame(stream: Stream, max_bytes: int, timeout: float) -> bytes:
    size = int.from_bytes(await read_exactly(stream, HEADER, timeout), "big")
    if size > max_bytes:
        raise FrameTooLarge(f"frame of {size} bytes exceeds the {max_bytes}-byte limit")
    return await read_exactly(stream, size, timeout) if size else b""


def pack_message(fields: list[Any]) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


def unpack_message(payload: bytes) -> list[Any]:
    """A positional array with an int kind first; anything else is a protocol error."""
    try:
        fields = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise ProtocolError(f"message is not msgpack: {exc}") from None
    if not isinstance(fields, list) or not fields or type(fields[0]) is not int:
        raise ProtocolError("a message is a msgpack array starting with an int kind")
    return fields


class MessageStream:
    """Request/response messages over one stream, with the stream's limits and timeouts."""

    def __init__(self, stream: Stream, max_frame_bytes: int, timeout: float) -> None:
        self.stream = stream
        self.max_frame_bytes = max_frame_bytes
        self.timeout = timeout

    async def send(self, fields: list[Any]) -> None:
        payload = pack_message(fields)
        if len(payload) > self.max_frame_bytes:
            raise FrameTooLarge(f"refusing to send a {len(payload)}-byte message")
        await write_frame(self.stream, payload, self.timeout)

    async def receive(self) -> list[Any]:
        return unpack_message(await read_frame(self.stream, self.max_frame_bytes, self.timeout))

    async def expect(self, kind: int, length: int) -> list[Any]:
        fields = await self.receive()
        if fields[0] != kind or len(fields) != length:
            raise ProtocolError(f"expected message {kind} of {length} fields, got {fields[0]}")
        return fields

    async def send_blob(self, data: bytes) -> bytes:
        """Announce and send `data`; returns its keccak256."""
        digest = keccak_256(data).digest()
        await self.send([MSG_BLOB, digest, len(data)])
        for start in range(0, len(data), CHUNK):
            await write_all(self.stream, data[start : start + CHUNK], self.timeout)
        return digest

    async def receive_blob(self, max_bytes: int, expected: bytes | None = None) -> bytes:
        """A blob of at most `max_bytes`, checked against its announced (and `expected`) hash."""
        _, digest, size = await self.expect(MSG_BLOB, 3)
        if type(digest) is not bytes or len(digest) != 32 or type(size) is not int or size < 0:
            raise ProtocolError("malformed blob announcement")
        if expected is not None and digest != expected:
            raise BlobMismatch(f"peer offered blob {digest.hex()[:16]}, not {expected.hex()[:16]}")
        if size > max_bytes:
            raise FrameTooLarge(f"blob of {size} bytes exceeds the {max_bytes}-byte limit")
        await expect_bytes(self.stream, size)  # accepted: the sender need not wait for credit
        hasher = keccak_256()
        data = bytearray()
        while len(data) < size:
            part = await read_exactly(self.stream, min(CHUNK, size - len(data)), self.timeout)
            hasher.update(part)
            data += part
        if hasher.digest() != digest:
            raise BlobMismatch(f"blob does not hash to {digest.hex()[:16]}")
        return bytes(data)
