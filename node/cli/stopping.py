"""How a long-running command stops: the first SIGINT or SIGTERM cancels its work and lets every
part stop cleanly; the stop is bounded. A second signal, or STOP_LIMIT_S without the clean stop
finishing (a peer that never answers a stream's close, a library task that ignores the
cancellation), ends the process at once. That is safe for what a node keeps: the event log and
the ticket store are SQLite files in WAL mode with synchronous=FULL, so every committed append
is on disk and an unfinished one is rolled back when the file is next opened."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
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
    """SIGINT and SIGTERM go to the `Stopper` while the block runs (its clean stop included)."""
    with trio.open_signal_receiver(*SIGNALS) as signals:
        stopper = Stopper(signals, limit_s)
        try:
            yield stopper
        finally:
            stopper.disarm()
