"""Reading a peer's pubsub stream: varint-prefixed RPC frames, read in large chunks, with the
stream's receive window held to a few frames.

py-libp2p reads each RPC's length one byte at a time, and each yamux read then sent a window
update frame (Noise-encrypted, one syscall) back (p2p/muxer.py now batches those): 3-4 reads and
as many updates per RPC, more CPU than the message itself.

The window: a node stops reading a peer's gossip while that peer has messages in validation
(flow control, `p2p.host`), and what the peer sends meanwhile waits in this node's memory, up to
the stream's window. A gossip stream that has been read for a while would have grown it to
16 MiB per peer; `GOSSIP_WINDOW` keeps it at two of the largest RPCs, which is all a reader that
takes one frame at a time needs, and a sender on a 100 ms path still gets 20 MiB/s through it.
"""

from __future__ import annotations

import trio
from libp2p.exceptions import ParseError
from libp2p.io.exceptions import IncompleteReadError, MessageTooLarge
from libp2p.network.stream.net_stream import INetStream

from p2p.muxer import cap_window

READ_CHUNK = 256 * 1024  # bytes asked of the muxer per read of a pubsub stream
GOSSIP_WINDOW = 2 * 1024 * 1024  # receive window of a pubsub stream: two of the largest RPCs


class RpcReader:
    """Varint-prefixed frames of at most `max_frame` bytes from `stream`, read in chunks."""

    def __init__(self, stream: INetStream, max_frame: int) -> None:
        self.stream = stream
        self.max_frame = max_frame
        self._buffer = bytearray()
        cap_window(stream, max(GOSSIP_WINDOW, 2 * max_frame))

    async def _fill(self) -> None:
        # a schedule point per chunk: the muxer's locks take no turn (p2p.quicklocks), and a
        # stream whose window is full of frames would otherwise be read through in one go
        await trio.lowlevel.checkpoint()
        chunk = await self.stream.read(READ_CHUNK)
        if not chunk:
            raise IncompleteReadError("pubsub stream ended inside a frame")
        self._buffer += chunk

    async def next(self) -> bytes:
        length = shift = 0
        index = 0
        while True:
            while index >= len(self._buffer):
                await self._fill()
            byte = self._buffer[index]
            index += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift >= 63:
                raise ParseError("pubsub frame length: varint too long")
        if length > self.max_frame:
            raise MessageTooLarge(f"pubsub frame of {length} bytes, over {self.max_frame}")
        while len(self._buffer) < index + length:
            await self._fill()
        frame = bytes(self._buffer[index : index + length])
        del self._buffer[: index + length]
        return frame
