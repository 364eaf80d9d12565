"""Overlapped pipeline stages: each stage runs in its own thread, linked by bounded queues.

A stage is a function from an iterator of items to an iterator of items, so a stage may batch
(take several, yield one) or split. onnxruntime, PyAV and most numpy work release the GIL, so
decode, pre-processing, inference and post-processing really overlap.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

Stage = Callable[[Iterator[Any]], Iterator[Any]]
DEPTH = 4
_POLL = 0.05  # seconds between checks of the stop flag while a queue is full or empty
_END = object()


class _Chain:
    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.lock = threading.Lock()

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

    def drain(self, q: queue.Queue[Any]) -> Iterator[Any]:
        while not self.stop.is_set():
            try:
                item = q.get(timeout=_POLL)
            except queue.Empty:
                continue
            if item is _END:
                return
            yield item

    def pump(self, items: Iterable[Any], out: queue.Queue[Any]) -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not self.put(out, item):
                    return
            self.put(out, _END)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self.fail(exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()


def run_stages(source: Iterable[Any], stages: Sequence[Stage], depth: int = DEPTH) -> Iterator[Any]:
    """Yield the last stage's items in the caller's thread; the first error anywhere is raised here.

    Closing the returned iterator early stops every thread; all have joined when it returns.
    """
    chain = _Chain(depth)
    queues: list[queue.Queue[Any]] = [queue.Queue(depth) for _ in range(len(stages) + 1)]
    threads = [threading.Thread(target=chain.pump, args=(source, queues[0]), name="stage-source")]
    for i, stage in enumerate(stages):
        items = stage(chain.drain(queues[i]))
        threads.append(
            threading.Thread(target=chain.pump, args=(items, queues[i + 1]), name=f"stage-{i}")
        )
    for thread in threads:
        thread.start()
    try:
        yield from chain.drain(queues[-1])
        if chain.error is not None:
            raise chain.error
    finally:
        chain.stop.set()
        for thread in threads:
            thread.join()
    if chain.error is not None:
        raise chain.error
