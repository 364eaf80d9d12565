"""Audit of a log: every signature, every author's hash chain, equivocations, and the refolded
state. Pure: it is fed raw events in log order and returns findings; the caller reads files."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from events.envelope import SignedEvent, decode
from events.errors import EventError
from events.fold import fold
from events.state import State, Violation


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken rule, named by log position (1-based), event id and author where known."""

    position: int
    rule: str
    detail: str
    event_id: bytes = b""
    author: bytes = b""
    seq: int = 0

    def describe(self) -> str:
        parts = [f"event {self.position}" if self.position else "log", self.rule]
        if self.event_id:
            parts.append(f"id {self.event_id.hex()}")
        if self.author:
            parts.append(f"author 0x{self.author.hex()} seq {self.seq}")
        return ": ".join([parts[0], " ".join(parts[1:])]) + (
            f" - {self.detail}" if self.detail else ""
        )


@dataclass(frozen=True, slots=True)
class AuditReport:
    events: int
    authors: int
    problems: tuple[Problem, ...]
    violations: tuple[Violation, ...]
    state: State

    @property
    def clean(self) -> bool:
        return not self.problems and not self.violations

    def integrity(self, own: Collection[bytes] = ()) -> tuple[Problem | Violation, ...]:
        """What is wrong with the log itself: unreadable or altered bytes, bad signatures, broken
        or incomplete chains, and any misconduct by the `own` authors (the node's own key)."""
        return tuple(f for f in self._findings() if not _accuses(f, own))

    def evidence(self, own: Collection[bytes] = ()) -> tuple[Problem | Violation, ...]:
        """Misconduct of other authors, recorded faithfully: equivocations and events that broke
        a rule of the fold. The log that holds it is intact."""
        return tuple(f for f in self._findings() if _accuses(f, own))

    def _findings(self) -> tuple[Problem | Violation, ...]:
        return (*self.problems, *self.violations)


EVIDENCE_RULES = frozenset({"equivocation"})  # problems that accuse an author, not the log


def _accuses(finding: Problem | Violation, own: Collection[bytes]) -> bool:
    """Whether a finding is evidence against another author rather than damage to the log."""
    if not finding.author or finding.author in own:
        return False
    return isinstance(finding, Violation) or finding.rule in EVIDENCE_RULES


def _problem(position: int, rule: str, detail: str, event: SignedEvent) -> Problem:
    return Problem(position, rule, detail, event.id, event.author, event.seq)


class ChainChecker:
    """Checks events one at a time against each author's chain; keeps the ids it has seen so a
    second event at a known (author, seq) is told apart as a duplicate or an equivocation."""

    def __init__(self, verify: bool = True) -> None:
        self.verify = verify
        self.problems: list[Problem] = []
        self.seen = 0
        self._ids: dict[bytes, list[bytes | None]] = {}  # author -> id by seq - 1

    def check(self, position: int, raw: bytes) -> SignedEvent | None:
        """The event if it should be folded, else None (after recording why)."""
        self.seen += 1
        try:
            event = decode(raw)
        except EventError as exc:
            self.problems.append(Problem(position, "undecodable", str(exc)))
            return None
        if self.verify:
            try:
                event.verify()
            except EventError as exc:
                self.problems.append(_problem(position, "bad-signature", str(exc), event))
                return None
        ids = self._ids.setdefault(event.author, [])
        if event.seq <= len(ids) and ids[event.seq - 1] is not None:
            known: bytes = ids[event.seq - 1]  # type: ignore[assignment]
            if known == event.id:
                self.problems.append(_problem(position, "duplicate", "event appears twice", event))
            else:
                detail = f"two events at one seq: {known.hex()} and {event.id.hex()}"
                self.problems.append(_problem(position, "equivocation", detail, event))
            return None
        expected = len(ids) + 1
        if event.seq > expected:
            missing = (
                f"seq {expected}"
                if event.seq == expected + 1
                else f"seq {expected}..{event.seq - 1}"
            )
            self.problems.append(_problem(position, "chain-gap", f"missing {missing}", event))
        elif event.seq < expected:
            self.problems.append(
                _problem(position, "chain-reordered", f"seq {event.seq} after {len(ids)}", event)
            )
        if event.seq >= 2:
            prev_id = ids[event.seq - 2] if event.seq - 1 <= len(ids) else None
            if prev_id is not None and prev_id != event.prev:
                self.problems.append(
                    _problem(position, "chain-broken", "prev is not the id of seq - 1", event)
                )
        if event.seq > len(ids):
            ids.extend([None] * (event.seq - len(ids)))
        ids[event.seq - 1] = event.id
        return event

    @property
    def authors(self) -> int:
        return len(self._ids)


def audit(
    raws: Iterable[tuple[int, bytes]],
    evidence: Iterable[tuple[bytes, bytes]] = (),
    *,
    verify: bool = True,
) -> AuditReport:
    """Audit `(position, raw)` pairs in log order. `evidence` holds (raw, stored id) pairs that a
    store kept aside as conflicting with a stored event."""
    checker = ChainChecker(verify)
    state = fold((e for p, raw in raws if (e := checker.check(p, raw)) is not None))
    problems = list(checker.problems)
    for raw, stored_id in evidence:
        try:
            event = decode(raw)
            event.verify()
        except EventError as exc:
            problems.append(Problem(0, "invalid-evidence", str(exc)))
            continue
        problems.append(
            Problem(
                0,
                "equivocation",
                f"two events at one seq: {stored_id.hex()} (in log)"
                f" and {event.id.hex()} (kept aside)",
                event.id,
                event.author,
                event.seq,
            )
        )
    return AuditReport(
        checker.seen, checker.authors, tuple(problems), tuple(state.violation_list()), state
    )
