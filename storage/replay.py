"""Rebuild the state from a store: the newest snapshot plus a fold of the tail."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterable, Iterator

from events.envelope import SignedEvent, decode, decode_verified
from events.errors import EventError
from events.fold import fold
from events.state import EMPTY, State
from storage.store import EventStore

log = logging.getLogger(__name__)


def decode_stream(rows: Iterable[tuple[int, bytes]], verify: bool) -> Iterator[SignedEvent]:
    """Decode stored events; a stored event that no longer decodes means the file was altered."""
    read = decode_verified if verify else decode
    for position, raw in rows:
        try:
            yield read(raw)
        except EventError as exc:
            raise EventError(f"stored event at position {position} is invalid: {exc}") from None


def load_state(store: EventStore, *, verify: bool = False, use_snapshot: bool = True) -> State:
    """The fold of every stored event. With a snapshot only the tail after it is folded."""
    # Rebuilding a big state allocates millions of objects and none of them are garbage: the
    # cyclic collector would rescan the growing heap again and again (3x slower at 1M events).
    paused = gc.isenabled()
    gc.disable()
    try:
        return _load_state(store, verify, use_snapshot)
    finally:
        if paused:
            gc.enable()


def _load_state(store: EventStore, verify: bool, use_snapshot: bool) -> State:
    position, state = 0, EMPTY
    if use_snapshot:
        try:
            found = store.load_snapshot()
        except EventError as exc:
            log.warning("ignoring unreadable snapshot in %s: %s", store.path, exc)
            found = None
        if found is not None:
            position, state = found
    return fold(decode_stream(store.read(after=position), verify), state)


def snapshot(store: EventStore, state: State) -> None:
    """Save `state` as the fold of the first `state.events` stored events."""
    store.save_snapshot(state.events, state)
