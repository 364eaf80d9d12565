"""Progress lines for long CLI operations (synth, import, audit of big logs), on stderr."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("castnet.progress")


def counted(
    items: Iterable[T], label: str, total: int | None = None, every: int = 100_000
) -> Iterator[T]:
    """Yield `items`, logging `label: n [/ total] (rate/s)` every `every` items."""
    start = time.monotonic()
    for n, item in enumerate(items, start=1):
        yield item
        if n % every == 0:
            rate = n / max(time.monotonic() - start, 1e-9)
            of = f"/{total:,}" if total else ""
            log.info("%s: %s%s events (%s/s)", label, f"{n:,}", of, f"{rate:,.0f}")
