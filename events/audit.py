"""Audit of a log: every signature, every author's hash chain, equivocations, and the refolded
state. Pure: it is fed raw events in log order and returns findings; the caller reads files."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from events import kinds as k
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


# problems that accuse an author, not the log
EVIDENCE_RULES = frozenset({"equivocation", "summary-mismatch"})


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


class _VerdictTallies:
    """A gateway's VerdictSummary events checked against the JobVerdicts of its job chain
    towards that orchestrator, where the log holds that chain: over the periods summarized, the
    counts and latency must be the same."""

    def __init__(self) -> None:
        self.verdicts: list[tuple[bytes, int, k.JobVerdict]] = []  # (author, time_ms, body)
        self.summaries: list[tuple[SignedEvent, k.VerdictSummary]] = []

    def see(self, event: SignedEvent) -> SignedEvent:
        if event.kind in (k.JobVerdict.KIND, k.VerdictSummary.KIND):
            try:
                body = k.read_body(event)
            except EventError:
                return event  # the fold records it as malformed
            if isinstance(body, k.JobVerdict):
                self.verdicts.append((event.author, event.time_ms, body))
            elif isinstance(body, k.VerdictSummary):
                self.summaries.append((event, body))
        return event

    def problems(self, state: State) -> list[Problem]:
        """One problem per summary whose period's verdicts (by signing time, in the job chain
        towards its orchestrator) do not add up to it. Verdicts outside every period (signed
        after the last summary, or before a crash lost their tally) are not checked."""
        held = {(c.principal, c.counterparty) for c in state.job_chains.values() if c.principal}
        by_pair: dict[tuple[bytes, bytes], list[tuple[int, k.JobVerdict]]] = {}
        for author, time_ms, v in self.verdicts:
            chain = state.job_chains.get(author)
            if chain is not None and chain.principal and v.orchestrator == chain.counterparty:
                by_pair.setdefault((chain.principal, v.orchestrator), []).append((time_ms, v))
        for verdicts in by_pair.values():
            verdicts.sort(key=lambda tv: tv[0])
        found = []
        for event, s in self.summaries:
            pair = (event.author, s.orchestrator)
            if pair not in held:
                continue  # the pair's job chain is not in this log: nothing to check against
            verdicts = by_pair.get(pair, [])
            times = [t for t, _ in verdicts]
            inside = verdicts[bisect_left(times, s.since_ms) : bisect_left(times, s.until_ms)]
            counted = (
                sum(v.accepted for _, v in inside),
                sum(not v.accepted for _, v in inside),
                sum(v.latency_ms for _, v in inside if v.accepted),
            )
            if counted != (s.verified, s.failed, s.latency_ms_total):
                detail = (
                    f"0x{s.orchestrator.hex()} over [{s.since_ms}, {s.until_ms}): it says"
                    f" {s.verified} verified, {s.failed} failed, {s.latency_ms_total} ms; the job"
                    f" chain holds {counted[0]}, {counted[1]}, {counted[2]} ms"
                )
                found.append(_problem(0, "summary-mismatch", detail, event))
        return found


def audit(
    raws: Iterable[tuple[int, bytes]],
    evidence: Iterable[tuple[bytes, bytes]] = (),
    *,
    verify: bool = True,
) -> AuditReport:
    """Audit `(position, raw)` pairs in log order. `evidence` holds (raw, stored id) pairs that a
    store kept aside as conflicting with a stored event."""
    checker = ChainChecker(verify)
    tallies = _VerdictTallies()
    state = fold(tallies.see(e) for p, raw in raws if (e := checker.check(p, raw)) is not None)
    problems = list(checker.problems)
    problems += tallies.problems(state)
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
