"""`apply(state, event) -> state`: the pure, deterministic transition of the network state.

Jobs: posted (JobPosted) -> assigned (the poster's JobAssigned names an orchestrator with an
offer) -> claimed (that orchestrator's JobClaimed: it accepted the assignment, before doing the
work) -> resulted (its JobResult) -> verified (the poster's accepting JobVerdict), or rejected /
failed (a refusing verdict), after which the poster may assign the job again. A claim by anyone
but the assignee ("claim-not-assigned") and a result whose assignment was not claimed
("result-without-claim") are violations; `Job.path` keeps the statuses a job went through.

Rules that an event breaks are recorded as violations in the state and the event is skipped; a
replay never stops on bad content. `fold` applies many events through one set of map mutations,
which gives the same result as applying them one by one.

The rules live by subject: here the fold's core (offers, jobs, tickets, equivocations and the
dispatch), `events.job_chain_rules` (job chains and verdict summaries), `events.chain_rules`
(what was observed on chain); `events.builder` holds the working copy they all write to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from events import kinds as k
from events.builder import Builder, violate
from events.chain_rules import PREC, chain_observed, delegated_stake, replace_ticket
from events.envelope import SignedEvent, decode_verified
from events.errors import EventError
from events.job_chain_rules import (
    NO_REPUTATION,
    job_chain_opened,
    outside_job_chain,
    principal,
    verdict_summary,
)
from events.state import (
    ASSIGNED,
    CLAIMED,
    EMPTY,
    FAILED,
    ISSUED,
    POSTED,
    RECEIVED,
    REDEEMED,
    REJECTED,
    RESULTED,
    VERIFIED,
    WON,
    Evidence,
    Head,
    Job,
    OfferState,
    Reputation,
    State,
    TicketRecord,
)

# delegated_stake and PREC stay importable from here, where their callers found them
__all__ = ["PREC", "apply", "delegated_stake", "fold"]


def apply(state: State, event: SignedEvent) -> State:
    builder = Builder(state)
    _apply(builder, event)
    return builder.finish()


def fold(events: Iterable[SignedEvent], initial: State = EMPTY) -> State:
    builder = Builder(initial)
    for event in events:
        _apply(builder, event)
    return builder.finish()


def _apply(b: Any, e: SignedEvent) -> None:
    b.events += 1
    name = k.kind_name(e.kind)
    b.by_kind[name] = b.by_kind.get(name, 0) + 1
    head = b.heads.get(e.author)
    if head is None or e.seq > head.seq:
        b.heads[e.author] = Head(e.seq, e.id)
    try:
        body = k.read_body(e)
    except EventError as exc:
        violate(b, e, "malformed-body", str(exc))
        return
    if body is None:
        return
    if e.kind in k.JOB_KINDS and e.kind != k.JobChainOpened.KIND:
        who = principal(b, e)
        if who is not None:
            _JOB_HANDLERS[type(body)](b, e, body, who)
        return
    if outside_job_chain(b, e):
        _HANDLERS[type(body)](b, e, body)


def _offer(b: Any, e: SignedEvent, o: k.Offer) -> None:
    b.offers[e.author] = OfferState(
        o.price_per_unit,
        o.pixels_per_unit,
        o.capabilities,
        o.capacity,
        o.peer_id,
        o.addrs,
        e.time_ms,
    )


def _offer_withdrawn(b: Any, e: SignedEvent, body: k.OfferWithdrawn) -> None:
    if e.author not in b.offers:
        violate(b, e, "withdraw-without-offer")
        return
    del b.offers[e.author]


def _job_posted(b: Any, e: SignedEvent, p: k.JobPosted, who: bytes) -> None:
    b.jobs[e.id] = Job(
        poster=who,
        pipeline=p.pipeline,
        posted_ms=e.time_ms,
        status=POSTED,
        path=(POSTED,),
        targets=p.targets,
        price_per_unit=p.max_price_per_unit,
        pixels_per_unit=p.pixels_per_unit,
    )


def _price_above(price: int, ppu: int, limit: int, limit_ppu: int) -> bool:
    return price * limit_ppu > limit * ppu


def _job_claimed(b: Any, e: SignedEvent, c: k.JobClaimed, who: bytes) -> None:
    job = b.jobs.get(c.job_id)
    if job is None:
        return violate(b, e, "claim-unknown-job", c.job_id.hex())
    if job.status == CLAIMED and job.assignee == who:
        return violate(b, e, "duplicate-claim")
    if job.status != ASSIGNED or job.assignee != who:
        return violate(b, e, "claim-not-assigned", job.status)
    if _price_above(c.price_per_unit, c.pixels_per_unit, job.price_per_unit, job.pixels_per_unit):
        return violate(b, e, "claim-above-assigned-price")
    b.jobs[c.job_id] = _replace_job(
        job, status=CLAIMED, claims=(*job.claims, who), path=(*job.path, CLAIMED)
    )


def _job_assigned(b: Any, e: SignedEvent, a: k.JobAssigned, who: bytes) -> None:
    job = b.jobs.get(a.job_id)
    if job is None:
        return violate(b, e, "assign-unknown-job", a.job_id.hex())
    if who != job.poster:
        return violate(b, e, "assign-by-non-poster")
    if job.status in (VERIFIED, RESULTED):
        return violate(b, e, "assign-settled-job", job.status)
    if a.orchestrator not in b.offers:
        return violate(b, e, "assign-without-offer", "0x" + a.orchestrator.hex())
    b.jobs[a.job_id] = _replace_job(
        job,
        status=ASSIGNED,
        assignee=a.orchestrator,
        attempts=job.attempts + 1,
        price_per_unit=a.price_per_unit,
        pixels_per_unit=a.pixels_per_unit,
        path=(*job.path, ASSIGNED),
    )


def _job_result(b: Any, e: SignedEvent, r: k.JobResult, who: bytes) -> None:
    job = b.jobs.get(r.job_id)
    if job is None:
        return violate(b, e, "result-unknown-job", r.job_id.hex())
    if job.assignee != who or job.status not in (ASSIGNED, CLAIMED):
        return violate(b, e, "result-not-assigned", job.status)
    if job.status != CLAIMED:
        return violate(b, e, "result-without-claim")
    b.jobs[r.job_id] = _replace_job(
        job, status=RESULTED, output_pixels=r.output_pixels, path=(*job.path, RESULTED)
    )


def _job_verdict(b: Any, e: SignedEvent, v: k.JobVerdict, who: bytes) -> None:
    job = b.jobs.get(v.job_id)
    if job is None:
        return violate(b, e, "verdict-unknown-job", v.job_id.hex())
    if who != job.poster:
        return violate(b, e, "verdict-by-non-poster")
    if v.orchestrator != job.assignee:
        return violate(b, e, "verdict-wrong-orchestrator")
    if job.status not in (ASSIGNED, CLAIMED, RESULTED):
        return violate(b, e, "verdict-without-attempt", job.status)
    if v.accepted and job.status != RESULTED:
        return violate(b, e, "accept-without-result")
    rep = b.reputation.get(v.orchestrator, NO_REPUTATION)
    if v.accepted:
        status = VERIFIED
        rep = Reputation(
            rep.verified + 1, rep.failed, rep.latency_ms_total + v.latency_ms, rep.equivocations
        )
    else:
        status = REJECTED if job.status == RESULTED else FAILED
        rep = Reputation(rep.verified, rep.failed + 1, rep.latency_ms_total, rep.equivocations)
    if who == e.author:  # a single-chain log; a job chain's verdicts count by its VerdictSummary
        b.reputation[v.orchestrator] = rep
    b.jobs[v.job_id] = _replace_job(job, status=status, path=(*job.path, status))


def _ticket_issued(b: Any, e: SignedEvent, t: k.TicketIssued, who: bytes) -> None:
    if t.ticket_hash in b.tickets:
        return violate(b, e, "ticket-replayed", t.ticket_hash.hex())
    nonce_key = (who, t.recipient_rand_hash, t.sender_nonce)
    if nonce_key in b.ticket_nonces:
        return violate(b, e, "ticket-nonce-reused", str(t.sender_nonce))
    b.ticket_nonces[nonce_key] = t.ticket_hash
    b.tickets[t.ticket_hash] = TicketRecord(who, t.recipient, t.face_value, t.win_prob, ISSUED)


def _ticket_received(b: Any, e: SignedEvent, t: k.TicketReceived, who: bytes) -> None:
    status = WON if t.winning else RECEIVED
    known = b.tickets.get(t.ticket_hash)
    if known is None:
        b.tickets[t.ticket_hash] = TicketRecord(t.sender, who, t.face_value, t.win_prob, status)
        return
    if known.recipient != who:
        return violate(b, e, "ticket-wrong-recipient")
    if (known.sender, known.face_value, known.win_prob) != (t.sender, t.face_value, t.win_prob):
        return violate(b, e, "ticket-mismatch")
    if known.status != ISSUED:
        return violate(b, e, "ticket-received-twice", known.status)
    b.tickets[t.ticket_hash] = TicketRecord(t.sender, who, t.face_value, t.win_prob, status)


def _ticket_redeemed(b: Any, e: SignedEvent, t: k.TicketRedeemed, who: bytes) -> None:
    known = b.tickets.get(t.ticket_hash)
    if known is None:
        return violate(b, e, "redeem-unknown-ticket", t.ticket_hash.hex())
    if known.recipient != who:
        return violate(b, e, "redeem-not-recipient")
    if known.claimed:
        return violate(b, e, "ticket-redeemed-twice")
    # the chain watcher may log the broker's redemption before the recipient logs its own
    if known.status not in (WON, REDEEMED):
        return violate(b, e, "redeem-losing-ticket", known.status)
    b.tickets[t.ticket_hash] = replace_ticket(known, REDEEMED, claimed=True)


def _equivocation(b: Any, e: SignedEvent, q: k.Equivocation) -> None:
    try:
        first, second = decode_verified(q.first), decode_verified(q.second)
    except EventError as exc:
        return violate(b, e, "bad-evidence", str(exc))
    if first.author != second.author or first.seq != second.seq or first.id == second.id:
        return violate(b, e, "bad-evidence", "not two different events at one (author, seq)")
    key = (first.author, first.seq)
    if key in b.evidence:
        return
    ids = sorted((first.id, second.id))
    b.evidence[key] = Evidence(first.author, first.seq, ids[0], ids[1], e.author)
    chain = b.job_chains.get(first.author)  # a job key's equivocation is its principal's
    culprit = chain.principal if chain is not None and chain.principal else first.author
    rep = b.reputation.get(culprit, NO_REPUTATION)
    b.reputation[culprit] = Reputation(
        rep.verified, rep.failed, rep.latency_ms_total, rep.equivocations + 1
    )


def _replace_job(job: Job, **changes: Any) -> Job:
    values = {name: getattr(job, name) for name in Job.__dataclass_fields__}
    values.update(changes)
    return Job(**values)


_HANDLERS: dict[type, Callable[[Any, SignedEvent, Any], None]] = {
    k.Offer: _offer,
    k.OfferWithdrawn: _offer_withdrawn,
    k.ChainObserved: chain_observed,
    k.Equivocation: _equivocation,
    k.JobChainOpened: job_chain_opened,
    k.VerdictSummary: verdict_summary,
}
# job-level kinds: called with the principal the event speaks for
_JOB_HANDLERS: dict[type, Callable[[Any, SignedEvent, Any, bytes], None]] = {
    k.JobPosted: _job_posted,
    k.JobClaimed: _job_claimed,
    k.JobAssigned: _job_assigned,
    k.JobResult: _job_result,
    k.JobVerdict: _job_verdict,
    k.TicketIssued: _ticket_issued,
    k.TicketReceived: _ticket_received,
    k.TicketRedeemed: _ticket_redeemed,
}
