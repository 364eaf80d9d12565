"""Plain-JSON views of events and state for `--json` output: bytes as 0x-hex, big ints as
decimal strings when they exceed JavaScript's safe range, dataclasses as objects."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from immutables import Map

from events import kinds as k
from events.envelope import SignedEvent
from events.errors import EventError
from events.state import State

JS_SAFE = 2**53


def jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return value if -JS_SAFE < value < JS_SAFE else str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict | Map):
        return {_key(key): jsonable(v) for key, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


def _key(key: Any) -> str:
    if isinstance(key, tuple):
        return ":".join(str(jsonable(part)) for part in key)
    return str(jsonable(key))


def event_view(event: SignedEvent, position: int | None = None) -> dict[str, Any]:
    try:
        body: Any = k.read_body(event)
    except EventError as exc:
        body = {"malformed": str(exc)}
    view: dict[str, Any] = {}
    if position is not None:
        view["position"] = position
    view.update(
        id="0x" + event.id.hex(),
        kind=k.kind_name(event.kind),
        version=event.version,
        author="0x" + event.author.hex(),
        seq=event.seq,
        prev="0x" + event.prev.hex(),
        time_ms=event.time_ms,
        body=jsonable(body if body is not None else event.body),
    )
    return view


def state_summary(state: State) -> dict[str, Any]:
    """The figures an auditor reads first, plus the per-party details."""
    jobs = Counter(job.status for job in state.jobs.values())
    tickets = Counter(t.status for t in state.tickets.values())
    return {
        "events": state.events,
        "events_by_kind": dict(sorted(state.by_kind.items())),
        "authors": len(state.heads),
        "round": state.round,
        "offers": jsonable(state.offers),
        "total_stake": str(sum(state.stakes.values())),
        "stakes": jsonable(state.stakes),
        "delegations": len(state.delegations),
        "funds": jsonable(state.funds),
        "jobs": len(state.jobs),
        "jobs_by_status": dict(sorted(jobs.items())),
        "job_paths": dict(
            sorted(Counter(" -> ".join(job.path) for job in state.jobs.values()).items())
        ),
        "tickets": len(state.tickets),
        "tickets_by_status": dict(sorted(tickets.items())),
        "winning_face_value": str(
            sum(t.face_value for t in state.tickets.values() if t.status in ("won", "redeemed"))
        ),
        "reputation": jsonable(state.reputation),
        "evidence": [jsonable(e) for e in state.evidence.values()],
        "violations": len(state.violations),
    }
