"""Overlapped pipeline stages: each stage runs in its own thread, linked by bounded queues.

A stage is a function from an iterator of items to an iterator of items, so a stage may batch
(take several, yield one) or split. onnxruntime, PyAV and most numpy work release the GIL, so
decode, pre-processing, inference and post-processing really overlap.

On a CPU the model's threads should have the cores first: any cycle decode or pre-processing takes
while the model could use it is taken from the rate the model sets. `in_background` runs a stage
(or the source) at a lower scheduling priority, so it works in the time the model leaves idle and
still keeps up when it must (a lowered thread is slowed, not starved). Linux only; elsewhere
every step runs at the caller's priority.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("castnet.inference")

Stage = Callable[[Iterator[Any]], Iterator[Any]]
DEPTH = 4
BACKGROUND_NICE = 10  # added to the niceness of a background step's thread (Linux: per thread)
_POLL = 0.05  # seconds between checks of the stop flag while a queue is full or empty
_END = object()


@dataclass(slots=True)
class StageTimes:
    """Seconds each named step spent working, not waiting for its neighbours, over a run.

    With every step in its own thread, the busiest one bounds the rate: `bounding` names it."""

    names: list[str]
    busy: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.busy:
            self.busy = [0.0] * len(self.names)

    def add(self, name: str, seconds: float) -> None:
        if name not in self.names:
            self.names.append(name)
            self.busy.append(0.0)
        self.busy[self.names.index(name)] += seconds

    def bounding(self) -> str:
        return self.names[max(range(len(self.busy)), key=self.busy.__getitem__)]

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, self.busy, strict=True))


def in_background(items: Iterable[Any]) -> Iterator[Any]:
    """`items`, produced at a lower priority: the thread that first asks for an item is lowered by
    `BACKGROUND_NICE` (with the threads it starts from then on, such as a decoder's), then every
    item of `items` is passed on. Where threads cannot be lowered, items pass on unchanged."""
    _lower_this_thread()
    yield from items


def background_stage(stage: Stage) -> Stage:
    """`stage` run at a lower priority (see `in_background`)."""

    def lowered(items: Iterator[Any]) -> Iterator[Any]:
        return in_background(stage(items))

    return lowered


_warned = threading.Event()


def _lower_this_thread() -> None:
    # only Linux takes a thread id where setpriority takes a process id (elsewhere the same number
    # could name another process)
    if sys.platform != "linux":
        return
    try:
        thread = threading.get_native_id()
        now = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, now + BACKGROUND_NICE))
    except OSError as exc:
        if not _warned.is_set():
            _warned.set()
            log.info("pipeline stages run at normal priority: %s", exc)


class _Chain:
    def __init__(self, depth: int, steps: int) -> None:
        self.depth = depth
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        # per thread: seconds spent inside its iterator, and of those, waiting on its input queue
        self.inside = [0.0] * steps
        self.waiting = [0.0] * steps

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = exc
        self.stop.set()

    def put(self, q: queue.Queue[Any], item: Any) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def drain(self, q: queue.Queue[Any], owner: int) -> Iterator[Any]:
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                item = q.get(timeout=_POLL)
            except queue.Empty:
                continue
            finally:
                self.waiting[owner] += time.perf_counter() - started
            if item is _END:
                return
            yield item

    def pump(self, items: Iterable[Any], out: queue.Queue[Any], index: int) -> None:
        iterator = iter(items)
        try:
            while True:
                started = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                finally:
                    self.inside[index] += time.perf_counter() - started
                if not self.put(out, item):
                    return
            self.put(out, _END)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self.fail(exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()


def run_stages(
    source: Iterable[Any],
    stages: Sequence[Stage],
    depth: int = DEPTH,
    times: StageTimes | None = None,
) -> Iterator[Any]:
    """Yield the last stage's items in the caller's thread; the first error anywhere is raised here.

    Closing the returned iterator early stops every thread; all have joined when it returns. With
    `times` (names for the source and each stage), each thread's working seconds are added to it.
    """
    if times is not None and len(times.names) < len(stages) + 1:
        raise ValueError(f"{len(stages) + 1} steps need names, got {times.names}")
    chain = _Chain(depth, len(stages) + 2)
    queues: list[queue.Queue[Any]] = [queue.Queue(depth) for _ in range(len(stages) + 1)]
    threads = [
        threading.Thread(target=chain.pump, args=(source, queues[0], 0), name="stage-source")
    ]
    for i, stage in enumerate(stages):
        items = stage(chain.drain(queues[i], i + 1))
        threads.append(
            threading.Thread(
                target=chain.pump, args=(items, queues[i + 1], i + 1), name=f"stage-{i}"
            )
        )
    for thread in threads:
        thread.start()
    try:
        yield from chain.drain(queues[-1], len(stages) + 1)
        if chain.error is not None:
            raise chain.error
    finally:
        chain.stop.set()
        for thread in threads:
            thread.join()
        if times is not None:
            for i in range(len(stages) + 1):
                times.add(times.names[i], chain.inside[i] - chain.waiting[i])
    if chain.error is not None:
        raise chain.error
