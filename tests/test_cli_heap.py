"""A node's start-up heap is left out of later garbage collections."""

from __future__ import annotations

import gc

from node.cli.heap import freeze_startup_heap


def test_the_start_up_heap_is_frozen_and_its_garbage_collected_first() -> None:
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    gc.unfreeze()
    kept = [Cycle() for _ in range(100)]
    Cycle()  # garbage in a reference cycle: only the collector frees it
    try:
        frozen = freeze_startup_heap()
        # frozen objects may still be freed (a worker thread that ends), never added to
        assert 0 < gc.get_freeze_count() <= frozen
        assert not any(type(o) is Cycle for o in gc.get_objects())  # out of the collector's view
        assert all(k.me is k for k in kept)
        assert not gc.garbage
    finally:
        gc.unfreeze()
    assert sum(type(o) is Cycle for o in gc.get_objects()) == 100  # the garbage cycle was freed
