"""How a long-running command stops: the first SIGINT or SIGTERM cancels its work and lets every
part stop cleanly; the stop is bounded. A second signal, or STOP_LIMIT_S without the clean stop
finishing (a peer that never answers a stream's close, a library task that ignores the
cancellation), ends the process at once. That is safe for what a node keeps: the event log and
the ticket store are SQLite files in WAL mode with synchronous=FULL, so every committed append
is on disk and an unfinished one is rolled back when the file is next opened.

SIGUSR1 logs the process's trio task tree (each task's name and where it waits), to see what a
node that seems stuck is waiting for: `kill -USR1 PID`."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio

log = logging.getLogger("castnet")
STOP_LIMIT_S = 30.0
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _exit_now(status: int, why: str) -> None:
    log.error("%s: exiting now (everything committed to the log is on disk)", why)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(status)


def _awaiting(coro: Any) -> list[str]:
    """Where a task's coroutine chain waits, outermost first: "file:line function"."""
    where = []
    for _ in range(64):  # bounded: chains are a few dozen deep
        if coro is None:
            break
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            frame = getattr(coro, "gi_frame", None)
        if frame is not None:
            name = frame.f_code.co_filename.rsplit("site-packages/", 1)[-1]
            where.append(f"{name}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = (getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
                or getattr(coro, "gi_yieldfrom", None))  # fmt: skip
    return where


def task_tree(root: trio.lowlevel.Task) -> list[str]:
    """Lines naming every task under `root`, indented by depth, each with where it waits (the
    innermost frames of trio itself left out)."""
    lines: list[str] = []
    todo = [(root, 0)]
    while todo and len(lines) < 100_000:
        task, depth = todo.pop()
        lines.append("  " * depth + f"task {task.name}")
        frames = [f for f in _awaiting(task.coro) if not f.startswith("trio/_core/")]
        lines += ["  " * depth + "    " + f for f in frames[-12:]]
        children = [c for n in task.child_nurseries for c in n.child_tasks]
        todo += [(c, depth + 1) for c in reversed(children)]
    return lines


async def _dump_tasks_on_sigusr1() -> None:
    with trio.open_signal_receiver(signal.SIGUSR1) as dumps:
        async for _ in dumps:
            lines = task_tree(trio.lowlevel.current_root_task())
            count = sum(1 for line in lines if line.lstrip().startswith("task "))
            log.warning("SIGUSR1: %d trio tasks\n%s", count, "\n".join(lines))


class Stopper:
    """Waits for the first signal, then bounds the stop that follows."""

    def __init__(self, signals: Any, limit_s: float) -> None:
        self._signals = signals
        self._limit_s = limit_s
        self._timer: threading.Timer | None = None
        self._watch = trio.CancelScope()
        self.signal: signal.Signals | None = None

    async def wait(self, scope: trio.CancelScope) -> None:
        """Until the first SIGINT or SIGTERM; then `scope` is cancelled (its work stops)."""
        async for signum in self._signals:
            self.signal = signal.Signals(signum)
            log.info("%s: shutting down (a second signal stops at once)", self.signal.name)
            self._arm()
            scope.cancel()
            return

    def _arm(self) -> None:
        limit = self._limit_s
        why = f"the stop did not finish within {limit:g} s"
        # a thread, so that a loop stuck in a shielded wait cannot hold the exit back
        self._timer = threading.Timer(limit, _exit_now, (1, why))
        self._timer.daemon = True
        self._timer.start()
        trio.lowlevel.spawn_system_task(self._second_signal)

    async def _second_signal(self) -> None:
        with self._watch:
            async for signum in self._signals:
                _exit_now(128 + signum, f"second {signal.Signals(signum).name}")

    def disarm(self) -> None:
        """The clean stop finished."""
        if self._timer is not None:
            self._timer.cancel()
        self._watch.cancel()


@contextlib.contextmanager
def stop_on_signal(limit_s: float = STOP_LIMIT_S) -> Iterator[Stopper]:
    """SIGINT and SIGTERM go to the `Stopper` while the block runs (its clean stop included);
    SIGUSR1 logs the task tree until the process ends."""
    trio.lowlevel.spawn_system_task(_dump_tasks_on_sigusr1)
    with trio.open_signal_receiver(*SIGNALS) as signals:
        stopper = Stopper(signals, limit_s)
        try:
            yield stopper
        finally:
            stopper.disarm()


async def until_done_or_signal(
    work: Callable[..., Awaitable[dict[str, Any]]], *args: Any
) -> tuple[dict[str, Any], signal.Signals | None]:
    """`work(*args)` (a command that runs a network in this process) until it ends or the first
    SIGINT (Ctrl-C) or SIGTERM: the signal cancels it, every node stops cleanly (bounded as in
    `stop_on_signal`), and the signal is returned with an empty result. The signal is taken
    here, not left to trio to raise as KeyboardInterrupt in whatever task runs when it
    arrives: a library task can swallow that (hypercorn's server takes it for its own
    shutdown), and `castnet demo` then ran its job to the end as if no Ctrl-C had come."""
    result: dict[str, Any] = {}
    with stop_on_signal() as stopper:
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                result.update(await work(*args))
                nursery.cancel_scope.cancel()  # done: stop waiting for a signal

            nursery.start_soon(run)
            await stopper.wait(nursery.cancel_scope)
    return result, stopper.signal


def stopped_exit(command: str, signum: signal.Signals) -> int:
    """The line and exit status of a command stopped by a signal: 130 for Ctrl-C, 143 for
    SIGTERM."""
    what = "interrupted" if signum == signal.SIGINT else f"stopped by {signum.name}"
    print(f"castnet {command}: {what}", file=sys.stderr)
    return 128 + signum
