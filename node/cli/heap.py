"""A long-running node's heap once it has started.

Everything the start made (modules, libraries' tables, the node's own objects: some 120,000 for
`castnet node start`) lives as long as the process, yet CPython's collector walks all of it in
every full collection, and a full collection of that heap took 35-110 ms here: a stall of the
trio loop, and of every message and segment in flight, whenever one came due. Frozen after the
start, those objects are left out of every later collection; a collection walks only what the
node made since."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect what the start left as garbage, then freeze the rest; returns the objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
