"""Locks on py-libp2p's data path that take a free lock without a trio schedule point.

An event gossiped through a node (about two copies received and four sent, one event per
message) takes about 90 locks there: the TCP stream's read and write locks, yamux's per
connection and per stream, the stream's state lock, nested and almost never contended. trio's
`Lock.acquire` yields to the scheduler even when the lock is free, a trip through the run loop
each time. These locks take a free lock at once and wait as trio's do when it is held (in turn:
a lock with waiters is not free); a cancelled task then notices at the next real wait, which
every one of these locks guards (a socket read or write, a wait for a stream's data).

`bench/net_bench.py` (10 node processes, 2 cores), before and after, runs alternated: CPU per
event per node 280-326 -> 238-251 us under load (727-741 events/s against 535-651), and 7.0-7.7
-> 6.6-6.9 ms when each event travels alone (the paced phase).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from libp2p.io.trio import TrioTCPStream
from libp2p.network.stream.net_stream import NetStream
from libp2p.stream_muxer.rw_lock import ReadWriteLock
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream


class _Quick:
    """Takes a free lock or slot of `_inner` at once; waits for a held one as trio does."""

    __slots__ = ("_inner",)
    _inner: Any

    async def acquire(self) -> None:
        try:
            self._inner.acquire_nowait()
        except trio.WouldBlock:
            await self._inner.acquire()

    def acquire_nowait(self) -> None:
        self._inner.acquire_nowait()

    def release(self) -> None:
        self._inner.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *_: object) -> None:
        self._inner.release()


class QuickLock(_Quick):
    """trio.Lock's interface; a free lock is taken without a schedule point."""

    __slots__ = ()

    def __init__(self) -> None:
        self._inner = trio.Lock()

    def locked(self) -> bool:
        return bool(self._inner.locked())

    def statistics(self) -> Any:
        return self._inner.statistics()


class QuickSemaphore(_Quick):
    """trio.Semaphore's interface (as ReadWriteLock uses it); a free slot is taken at once."""

    __slots__ = ()

    def __init__(self, value: int) -> None:
        self._inner = trio.Semaphore(value)

    @property
    def value(self) -> int:
        return int(self._inner.value)


# the classes and the lock attributes their constructors make
_LOCKS: dict[type, tuple[str, ...]] = {
    TrioTCPStream: ("read_lock", "write_lock"),
    NetStream: ("_state_lock",),
    YamuxStream: ("window_lock", "close_lock"),
    Yamux: ("streams_lock", "_write_lock"),
    ReadWriteLock: ("_readers_lock",),
}
_installed = False


def _swapping(init: Callable[..., None], names: tuple[str, ...]) -> Callable[..., None]:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        for name in names:
            if isinstance(getattr(self, name, None), trio.Lock):
                setattr(self, name, QuickLock())
        if isinstance(self, ReadWriteLock):
            self._writer_lock = QuickSemaphore(1)  # type: ignore[assignment]

    return __init__


def install_quick_locks() -> None:
    """Make py-libp2p's TCP streams, streams, muxers and their read-write locks use quick locks
    (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    for cls, names in _LOCKS.items():
        cls.__init__ = _swapping(cls.__init__, names)  # type: ignore[misc]
