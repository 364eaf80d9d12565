"""Job chains and verdict summaries in the fold.

A job-level event is written in a job chain: a key per pair of parties whose first event, the
JobChainOpened binding signed by the principal, says whom the chain speaks for. A refused
binding leaves the chain speaking for no one, and a job chain holds job-level events only. A
gateway's verdicts in job chains count for reputation by its network-wide VerdictSummary, one
per orchestrator and period, periods never overlapping.
"""

from __future__ import annotations

from typing import Any

from events import kinds as k
from events.builder import violate
from events.crypto import SignatureError, recover_address
from events.envelope import SignedEvent
from events.state import JobChain, Reputation

NO_REPUTATION = Reputation()


def outside_job_chain(b: Any, e: SignedEvent) -> bool:
    """Whether a network-wide event may apply: not one written in a job chain."""
    if e.author in b.job_chains and e.kind != k.JobChainOpened.KIND:
        violate(b, e, "network-event-in-job-chain")
        return False
    return True


def principal(b: Any, e: SignedEvent) -> bytes | None:
    """Whom a job-level event speaks for: its job chain's principal. An author without a binding
    wrote a single-chain log (before job chains): it speaks for itself. A chain whose binding
    was refused speaks for no one."""
    chain = b.job_chains.get(e.author)
    if chain is None:
        return e.author
    if not chain.principal:
        violate(b, e, "job-chain-unbound", "its JobChainOpened was refused")
        return None
    return chain.principal


def job_chain_opened(b: Any, e: SignedEvent, o: k.JobChainOpened) -> None:
    """A job chain's binding: only at seq 1, signed by the principal it names, never the
    principal's own key. A refused binding leaves the chain speaking for no one."""
    if e.seq != 1:
        return violate(b, e, "binding-not-first", f"seq {e.seq}")
    problem = ""
    if o.principal == e.author:
        problem = "a job chain's key is not its principal's key"
    else:
        try:
            signer = recover_address(
                k.binding_digest(e.author, o.counterparty, o.network), o.principal_sig
            )
        except SignatureError as exc:
            signer, problem = b"", str(exc)
        if not problem and signer != o.principal:
            problem = f"signed by 0x{signer.hex()}, not by the principal 0x{o.principal.hex()}"
    if problem:
        b.job_chains[e.author] = JobChain(b"", o.counterparty)
        return violate(b, e, "binding-bad-signature", problem)
    b.job_chains[e.author] = JobChain(o.principal, o.counterparty)


def verdict_summary(b: Any, e: SignedEvent, v: k.VerdictSummary) -> None:
    """A gateway's verdicts on one orchestrator over a period, folded into reputation; periods
    of one gateway on one orchestrator may not overlap (nothing is counted twice)."""
    key = (e.author, v.orchestrator)
    last = b.summaries.get(key)
    if last is not None and v.since_ms < last:
        return violate(b, e, "summary-overlaps", f"since {v.since_ms} < {last}")
    b.summaries[key] = v.until_ms
    rep = b.reputation.get(v.orchestrator, NO_REPUTATION)
    b.reputation[v.orchestrator] = Reputation(
        rep.verified + v.verified,
        rep.failed + v.failed,
        rep.latency_ms_total + v.latency_ms_total,
        rep.equivocations,
    )
