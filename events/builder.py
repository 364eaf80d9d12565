"""The fold's working copy of a State (mutable maps, frozen again by `finish`) and how a rule
an event breaks is recorded in it: the parts every group of fold rules shares."""

from __future__ import annotations

from typing import Any

from immutables import Map

from events import kinds as k
from events.envelope import SignedEvent
from events.state import State, Violation

_MAPS = (
    "by_kind",
    "heads",
    "offers",
    "stakes",
    "delegations",
    "funds",
    "jobs",
    "tickets",
    "ticket_nonces",
    "reputation",
    "evidence",
    "chain_seen",
    "violations",
    "minter",
    "minter_params",
    "reward_factors",
    "latest_factor",
    "delegation_base",
    "job_chains",
    "summaries",
)


class Builder:
    """Mutable working copy of a State; `finish` freezes it into a new State."""

    __slots__ = ("events", "round", *_MAPS)

    def __init__(self, state: State) -> None:
        self.events = state.events
        self.round = state.round
        for name in _MAPS:
            setattr(self, name, getattr(state, name).mutate())

    def finish(self) -> State:
        maps: dict[str, Map[Any, Any]] = {name: getattr(self, name).finish() for name in _MAPS}
        return State(events=self.events, round=self.round, **maps)


def violate(b: Any, e: SignedEvent, rule: str, detail: str = "") -> None:
    b.violations[len(b.violations)] = Violation(
        e.id, e.author, e.seq, k.kind_name(e.kind), rule, detail
    )
