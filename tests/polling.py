"""Bounded polling for conditions that offer nothing to wait on: another process's state (a
chain, a PID, files it writes) or a peer's connection table. Each check runs until it holds or
its deadline passes, and a miss fails with what was awaited and the last value seen, never a
bare timeout. Conditions inside this process that have an event are awaited on the event."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

T = TypeVar("T")


class NeverHappened(AssertionError):
    """A polled condition did not hold before its deadline."""


def _failure(what: str, timeout: float, last: object) -> NeverHappened:
    return NeverHappened(f"{what}: still not so after {timeout:g} s (last check: {last!r})")


async def until(
    check: Callable[[], T | Awaitable[T]], what: str, timeout: float, interval: float = 0.02
) -> T:
    """`check()`'s first truthy value (it may be a coroutine function), checked every `interval`
    seconds until `timeout`; NeverHappened naming `what` after that."""
    last: object = None
    with trio.move_on_after(timeout):
        while True:
            value = check()
            if isinstance(value, Awaitable):
                value = await value
            if value:
                return value
            last = value
            await trio.sleep(interval)
    raise _failure(what, timeout, last)


async def until_in_thread(
    check: Callable[[], T], what: str, timeout: float, interval: float = 0.05
) -> T:
    """`until` for a blocking check (a file, SQLite, an RPC call): each check runs in a thread."""
    return await until(lambda: trio.to_thread.run_sync(check), what, timeout, interval)


def blocking_until(check: Callable[[], T], what: str, timeout: float, interval: float = 0.05) -> T:
    """`until` for a synchronous test (no trio loop): blocks between checks."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, value)
        time.sleep(interval)
