"""Yamux receive-window credit returned the way go-yamux returns it: in batches of half the
window, not after every read.

py-libp2p 0.8.1's yamux stream sends a WINDOW_UPDATE frame after (almost) every read: on a
gossip stream that is one more Noise-encrypted frame and syscall per message received, which the
sender must then read, decrypt and parse too. On ten node processes, a node spent about a fifth
less CPU per gossip event without them. go-yamux (and js-libp2p's yamux) send an
update only once the credit the sender lacks reaches half the receive window, and that is all
the protocol needs: the sender never waits while the reader keeps reading.

The window grows with what the reader takes, not with what the sender offers: it starts at yamux's
256 KiB and doubles each time the reader has taken half of it, up to go-yamux's maximum of 16 MiB.
A steady transfer (a segment's upload, its renditions) reaches the full window within its first
few megabytes; a peer whose one small request was read cannot park more than the first window in
this node's memory on that stream. A reader that accepts a blob of a known size credits the
sender for all of it at once (`expect_bytes`). (An earlier version granted the full 16 MiB at a
stream's first read: any peer that opened a stream and sent a request got 16 MiB of credit.)"""

from __future__ import annotations

import logging
from typing import Any

import trio
from libp2p.network.connection.exceptions import RawConnError
from libp2p.stream_muxer.yamux.yamux import (
    DEFAULT_WINDOW_SIZE,
    MAX_MESSAGE_SIZE,
    MAX_WINDOW_SIZE,
    Yamux,
    YamuxStream,
)

log = logging.getLogger("castnet.p2p.muxer")
TEAR_DOWN_S = 10.0  # the most a broken connection's teardown may take


async def _return_credit(self: YamuxStream, *, bytes_read: int = 0) -> None:
    """After a read: once the reader has taken half the window, double it (up to the maximum)
    and send the sender the credit it lacks. Replaces py-libp2p's per-read release (its
    `_auto_tune_and_send_window_update`)."""
    async with self.window_lock:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        lacking = self.target_recv_window - (self.recv_window + buffered)
        if lacking <= 0 or lacking < self.target_recv_window // 2:
            return
        largest = getattr(self, "castnet_window_cap", MAX_WINDOW_SIZE)
        self.target_recv_window = max(
            self.target_recv_window, min(self.target_recv_window * 2, largest)
        )
        increment = self._grow_to_delta(buffered)
        self._pending_recv_release = 0
    if increment > 0:  # sent outside the lock, as py-libp2p does (inbound updates take it)
        await self.send_window_update(increment, skip_lock=True)


class WindowExceeded(RawConnError):
    """A peer sent a stream more than the credit it was given: the connection is closed."""


class _Buffer(bytearray):
    """A stream's received bytes not yet read, refusing to grow past the stream's window.

    py-libp2p 0.8.1 logs a peer that sends past the receive window and buffers the bytes anyway,
    so a peer that ignores flow control could fill this node's memory through any stream nobody
    reads. go-yamux ends the session in that case; so does castnet: the check raises, and
    py-libp2p's reader treats a connection error by closing the connection."""

    muxer: Yamux
    stream_id: int

    def extend(self, data: Any) -> None:
        stream = self.muxer.streams.get(self.stream_id)
        window = stream.target_recv_window if stream is not None else DEFAULT_WINDOW_SIZE
        over = len(self) + len(data) - window - MAX_MESSAGE_SIZE  # a frame of slack
        if over > 0:
            muxer = self.muxer
            if not getattr(muxer, "castnet_closing", False):
                muxer.castnet_closing = True  # type: ignore[attr-defined]
                log.warning("peer %s sent %d bytes past the receive window of a stream: closing"
                            " the connection", muxer.peer_id, over)  # fmt: skip
                if muxer._nursery is not None:  # py-libp2p's own teardown of a broken connection
                    muxer._nursery.start_soon(_tear_down, muxer)
            raise WindowExceeded(f"peer sent {over} bytes past a stream's receive window")
        super().extend(data)


async def _tear_down(muxer: Yamux) -> None:
    """py-libp2p's teardown of a broken connection, to the end: it runs in the muxer's nursery,
    which py-libp2p cancels once the muxer's reader stops, and the reader stops as soon as the
    teardown begins; cancelled there, the connection was never reported closed."""
    with trio.CancelScope(shield=True, deadline=trio.current_time() + TEAR_DOWN_S):
        await muxer._cleanup_on_error()


class _SaidOnce(logging.Filter):
    """py-libp2p logs a refused frame as an ERROR of its own; castnet's warning says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "past a stream's receive window" not in record.getMessage()


class _Buffers(dict[int, bytearray]):
    def __init__(self, muxer: Yamux) -> None:
        super().__init__()
        self.muxer = muxer

    def __setitem__(self, stream_id: int, buffer: bytearray) -> None:
        bounded = buffer if isinstance(buffer, _Buffer) else _Buffer(buffer)
        bounded.muxer, bounded.stream_id = self.muxer, stream_id
        super().__setitem__(stream_id, bounded)


_yamux_init = Yamux.__init__


def _bounded_init(self: Yamux, *args: Any, **kwargs: Any) -> None:
    _yamux_init(self, *args, **kwargs)
    self.stream_buffers = _Buffers(self)


def batch_window_updates() -> None:
    """Install the batched credit release on py-libp2p's yamux streams, and the receive-window
    check on its connections (idempotent)."""
    YamuxStream._auto_tune_and_send_window_update = _return_credit  # type: ignore[method-assign]
    Yamux.__init__ = _bounded_init  # type: ignore[method-assign]
    yamux_log = logging.getLogger(Yamux.__module__)
    if not any(isinstance(f, _SaidOnce) for f in yamux_log.filters):
        yamux_log.addFilter(_SaidOnce())


async def expect_bytes(stream: Any, size: int) -> None:
    """Credit the sender at once for `size` bytes the reader of `stream` is about to read (a blob
    it has accepted), up to the maximum window, instead of doubling the window as they come.
    Streams other than yamux's (test doubles, other muxers) are left alone."""
    muxed = getattr(stream, "muxed_stream", None)
    if not isinstance(muxed, YamuxStream):
        return
    async with muxed.window_lock:
        buffered = len(muxed.conn.stream_buffers.get(muxed.stream_id, b""))
        muxed.target_recv_window = min(MAX_WINDOW_SIZE, max(muxed.target_recv_window, size))
        increment = muxed._grow_to_delta(buffered)
    if increment > 0:
        await muxed.send_window_update(increment, skip_lock=True)


def cap_window(stream: Any, largest: int) -> None:
    """Never let `stream`'s receive window grow past `largest` bytes (yamux streams only)."""
    muxed = getattr(stream, "muxed_stream", None)
    if isinstance(muxed, YamuxStream):
        muxed.castnet_window_cap = largest  # type: ignore[attr-defined]
