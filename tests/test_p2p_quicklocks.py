"""Quick locks on py-libp2p's data path: a free lock is taken without a schedule point, a held
one is waited for in turn, and py-libp2p's streams and muxers are built with them."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from libp2p.io.trio import TrioTCPStream

from p2p.quicklocks import QuickLock, QuickSemaphore
from tests.p2p_hosts import loopback_hosts, open_stream


async def test_a_free_lock_is_taken_without_a_schedule_point() -> None:
    lock = QuickLock()
    with trio.testing.assert_no_checkpoints():
        async with lock:
            assert lock.locked()
    assert not lock.locked()
    semaphore = QuickSemaphore(1)
    with trio.testing.assert_no_checkpoints():
        async with semaphore:
            assert semaphore.value == 0
    assert semaphore.value == 1


async def test_a_held_lock_is_waited_for_and_handed_over_in_turn() -> None:
    lock, order = QuickLock(), list[str]()

    async def take(name: str) -> None:
        async with lock:
            order.append(name)

    async with trio.open_nursery() as nursery:
        await lock.acquire()
        nursery.start_soon(take, "first waiter")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(take, "second waiter")
        await trio.testing.wait_all_tasks_blocked()
        lock.release()
        # free again only for the waiters: a newcomer does not jump the queue
        with pytest.raises(trio.WouldBlock):
            lock.acquire_nowait()
    assert order == ["first waiter", "second waiter"]


async def test_a_waiter_can_be_cancelled(autojump_clock: trio.testing.MockClock) -> None:
    lock, release = QuickLock(), trio.Event()

    async def hold() -> None:
        async with lock:
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(0.05) as scope:
            await lock.acquire()
        assert scope.cancelled_caught
        release.set()
    assert not lock.locked()
    async with lock:  # nobody is left waiting in the lock's queue
        pass


async def test_connections_and_streams_use_quick_locks() -> None:
    got = trio.Event()

    async def handler(stream: object) -> None:
        got.set()

    async with loopback_hosts(0x51, 0x52) as (a, b):
        b.host.set_stream_handler("/castnet/test-locks/1", handler)  # type: ignore[arg-type]
        stream = await open_stream(a, b, "/castnet/test-locks/1")
        await stream.write(b"x")
        with trio.fail_after(10):
            await got.wait()
        muxed = stream.muxed_stream  # type: ignore[attr-defined]
        tcp = muxed.conn.secured_conn
        for _ in range(4):  # down to the TCP stream under the secure session
            if not isinstance(tcp, TrioTCPStream):
                tcp = getattr(tcp, "conn", None) or getattr(tcp, "stream", tcp)
        assert isinstance(stream._state_lock, QuickLock)  # type: ignore[attr-defined]
        assert isinstance(muxed.window_lock, QuickLock)
        assert isinstance(muxed.conn.streams_lock, QuickLock)
        assert isinstance(muxed.conn._write_lock, QuickLock)
        assert isinstance(tcp.write_lock, QuickLock)
