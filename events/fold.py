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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from immutables import Map

from events import kinds as k
from events.crypto import SignatureError, recover_address
from events.envelope import SignedEvent, decode_verified
from events.errors import EventError
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
    Delegation,
    Evidence,
    Funds,
    Head,
    Job,
    JobChain,
    MinterRound,
    OfferState,
    Reputation,
    State,
    TicketRecord,
    Violation,
)

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
PREC = 10**27  # the bonding contract's factor scale


class _Builder:
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


def apply(state: State, event: SignedEvent) -> State:
    builder = _Builder(state)
    _apply(builder, event)
    return builder.finish()


def fold(events: Iterable[SignedEvent], initial: State = EMPTY) -> State:
    builder = _Builder(initial)
    for event in events:
        _apply(builder, event)
    return builder.finish()


def _violate(b: Any, e: SignedEvent, rule: str, detail: str = "") -> None:
    b.violations[len(b.violations)] = Violation(
        e.id, e.author, e.seq, k.kind_name(e.kind), rule, detail
    )


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
        _violate(b, e, "malformed-body", str(exc))
        return
    if body is None:
        return
    if e.kind in k.JOB_KINDS and e.kind != k.JobChainOpened.KIND:
        who = _principal(b, e)
        if who is not None:
            _JOB_HANDLERS[type(body)](b, e, body, who)
        return
    if e.author in b.job_chains and e.kind != k.JobChainOpened.KIND:
        return _violate(b, e, "network-event-in-job-chain")
    _HANDLERS[type(body)](b, e, body)


def _principal(b: Any, e: SignedEvent) -> bytes | None:
    """Whom a job-level event speaks for: its job chain's principal. An author without a binding
    wrote a single-chain log (before job chains): it speaks for itself. A chain whose binding
    was refused speaks for no one."""
    chain = b.job_chains.get(e.author)
    if chain is None:
        return e.author
    if not chain.principal:
        _violate(b, e, "job-chain-unbound", "its JobChainOpened was refused")
        return None
    return chain.principal


def _job_chain_opened(b: Any, e: SignedEvent, o: k.JobChainOpened) -> None:
    """A job chain's binding: only at seq 1, signed by the principal it names, never the
    principal's own key. A refused binding leaves the chain speaking for no one."""
    if e.seq != 1:
        return _violate(b, e, "binding-not-first", f"seq {e.seq}")
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
        return _violate(b, e, "binding-bad-signature", problem)
    b.job_chains[e.author] = JobChain(o.principal, o.counterparty)


def _verdict_summary(b: Any, e: SignedEvent, v: k.VerdictSummary) -> None:
    """A gateway's verdicts on one orchestrator over a period, folded into reputation; periods
    of one gateway on one orchestrator may not overlap (nothing is counted twice)."""
    key = (e.author, v.orchestrator)
    last = b.summaries.get(key)
    if last is not None and v.since_ms < last:
        return _violate(b, e, "summary-overlaps", f"since {v.since_ms} < {last}")
    b.summaries[key] = v.until_ms
    rep = b.reputation.get(v.orchestrator, _NO_REPUTATION)
    b.reputation[v.orchestrator] = Reputation(
        rep.verified + v.verified,
        rep.failed + v.failed,
        rep.latency_ms_total + v.latency_ms_total,
        rep.equivocations,
    )


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
        _violate(b, e, "withdraw-without-offer")
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
        return _violate(b, e, "claim-unknown-job", c.job_id.hex())
    if job.status == CLAIMED and job.assignee == who:
        return _violate(b, e, "duplicate-claim")
    if job.status != ASSIGNED or job.assignee != who:
        return _violate(b, e, "claim-not-assigned", job.status)
    if _price_above(c.price_per_unit, c.pixels_per_unit, job.price_per_unit, job.pixels_per_unit):
        return _violate(b, e, "claim-above-assigned-price")
    b.jobs[c.job_id] = _replace_job(
        job, status=CLAIMED, claims=(*job.claims, who), path=(*job.path, CLAIMED)
    )


def _job_assigned(b: Any, e: SignedEvent, a: k.JobAssigned, who: bytes) -> None:
    job = b.jobs.get(a.job_id)
    if job is None:
        return _violate(b, e, "assign-unknown-job", a.job_id.hex())
    if who != job.poster:
        return _violate(b, e, "assign-by-non-poster")
    if job.status in (VERIFIED, RESULTED):
        return _violate(b, e, "assign-settled-job", job.status)
    if a.orchestrator not in b.offers:
        return _violate(b, e, "assign-without-offer", "0x" + a.orchestrator.hex())
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
        return _violate(b, e, "result-unknown-job", r.job_id.hex())
    if job.assignee != who or job.status not in (ASSIGNED, CLAIMED):
        return _violate(b, e, "result-not-assigned", job.status)
    if job.status != CLAIMED:
        return _violate(b, e, "result-without-claim")
    b.jobs[r.job_id] = _replace_job(
        job, status=RESULTED, output_pixels=r.output_pixels, path=(*job.path, RESULTED)
    )


def _job_verdict(b: Any, e: SignedEvent, v: k.JobVerdict, who: bytes) -> None:
    job = b.jobs.get(v.job_id)
    if job is None:
        return _violate(b, e, "verdict-unknown-job", v.job_id.hex())
    if who != job.poster:
        return _violate(b, e, "verdict-by-non-poster")
    if v.orchestrator != job.assignee:
        return _violate(b, e, "verdict-wrong-orchestrator")
    if job.status not in (ASSIGNED, CLAIMED, RESULTED):
        return _violate(b, e, "verdict-without-attempt", job.status)
    if v.accepted and job.status != RESULTED:
        return _violate(b, e, "accept-without-result")
    rep = b.reputation.get(v.orchestrator, _NO_REPUTATION)
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
        return _violate(b, e, "ticket-replayed", t.ticket_hash.hex())
    nonce_key = (who, t.recipient_rand_hash, t.sender_nonce)
    if nonce_key in b.ticket_nonces:
        return _violate(b, e, "ticket-nonce-reused", str(t.sender_nonce))
    b.ticket_nonces[nonce_key] = t.ticket_hash
    b.tickets[t.ticket_hash] = TicketRecord(who, t.recipient, t.face_value, t.win_prob, ISSUED)


def _ticket_received(b: Any, e: SignedEvent, t: k.TicketReceived, who: bytes) -> None:
    status = WON if t.winning else RECEIVED
    known = b.tickets.get(t.ticket_hash)
    if known is None:
        b.tickets[t.ticket_hash] = TicketRecord(t.sender, who, t.face_value, t.win_prob, status)
        return
    if known.recipient != who:
        return _violate(b, e, "ticket-wrong-recipient")
    if (known.sender, known.face_value, known.win_prob) != (t.sender, t.face_value, t.win_prob):
        return _violate(b, e, "ticket-mismatch")
    if known.status != ISSUED:
        return _violate(b, e, "ticket-received-twice", known.status)
    b.tickets[t.ticket_hash] = TicketRecord(t.sender, who, t.face_value, t.win_prob, status)


def _ticket_redeemed(b: Any, e: SignedEvent, t: k.TicketRedeemed, who: bytes) -> None:
    known = b.tickets.get(t.ticket_hash)
    if known is None:
        return _violate(b, e, "redeem-unknown-ticket", t.ticket_hash.hex())
    if known.recipient != who:
        return _violate(b, e, "redeem-not-recipient")
    if known.claimed:
        return _violate(b, e, "ticket-redeemed-twice")
    # the chain watcher may log the broker's redemption before the recipient logs its own
    if known.status not in (WON, REDEEMED):
        return _violate(b, e, "redeem-losing-ticket", known.status)
    b.tickets[t.ticket_hash] = _replace_ticket(known, REDEEMED, claimed=True)


def _chain_observed(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    key = (c.tx_hash, c.log_index)
    seen = b.chain_seen.get(key)
    if seen is not None:
        if seen != c.block_hash:
            _violate(b, e, "chain-conflict", f"log {c.tx_hash.hex()}:{c.log_index} in two blocks")
        return  # the same chain log seen by several observers counts once
    b.chain_seen[key] = c.block_hash
    _CHAIN_HANDLERS[c.what](b, e, c)


def _bond(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    delegator, orchestrator, amount = c.args
    current = b.delegations.get(delegator)
    total = amount
    if current is not None:
        total += current.amount
        if current.orchestrator != orchestrator:  # bonding elsewhere moves the whole stake
            _add_stake(b, current.orchestrator, -current.amount)
            amount = total
    _add_stake(b, orchestrator, amount)
    b.delegations[delegator] = Delegation(orchestrator, total)


def _unbond(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    delegator, orchestrator, amount = c.args
    current = b.delegations.get(delegator)
    if current is None or current.orchestrator != orchestrator or current.amount < amount:
        return _violate(b, e, "unbond-exceeds-bond", str(amount))
    _add_stake(b, orchestrator, -amount)
    if current.amount == amount:
        del b.delegations[delegator]
    else:
        b.delegations[delegator] = Delegation(orchestrator, current.amount - amount)


def _bonded(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    """The bonding contract's Bond log: `amount` new tokens, `bonded` the delegator's total after;
    bonding to another orchestrator moves the previous stake (bonded - amount) along."""
    delegator, orchestrator, old, amount, bonded = c.args
    if amount > bonded:
        return _violate(b, e, "bond-above-bonded", f"{amount} > {bonded}")
    moved = bonded - amount
    if old != _NO_ADDRESS and old != orchestrator and moved:
        if b.stakes.get(old, 0) < moved:
            return _violate(b, e, "bond-move-exceeds-stake", str(moved))
        _add_stake(b, old, -moved)
        _add_stake(b, orchestrator, bonded)
    else:
        _add_stake(b, orchestrator, amount)
    _set_delegation(b, delegator, orchestrator, bonded, c)


def _unbonded(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    delegator, orchestrator, amount, bonded = c.args
    if amount > b.stakes.get(orchestrator, 0):
        return _violate(b, e, "unbond-exceeds-stake", str(amount))
    _add_stake(b, orchestrator, -amount)
    _set_delegation(b, delegator, orchestrator, bonded, c)


def _rebonded(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    delegator, orchestrator, amount, bonded = c.args
    _add_stake(b, orchestrator, amount)
    _set_delegation(b, delegator, orchestrator, bonded, c)


def _set_delegation(
    b: Any, delegator: bytes, orchestrator: bytes, bonded: int, c: k.ChainObserved | None = None
) -> None:
    """`bonded` is the delegator's bond with its earnings claimed; a bond change in round R makes
    the end of R its baseline, as the contract does (see `delegated_stake`)."""
    if bonded:
        b.delegations[delegator] = Delegation(orchestrator, bonded)
        length = b.minter_params.get("round_length")
        if c is not None and length:
            factor = b.latest_factor.get(orchestrator, PREC)
            b.delegation_base[delegator] = (c.block_number // length, factor)
        elif delegator in b.delegation_base:
            del b.delegation_base[delegator]
        return
    if delegator in b.delegations:
        del b.delegations[delegator]
    if delegator in b.delegation_base:
        del b.delegation_base[delegator]


def _base_factor(b: Any, delegator: bytes, orchestrator: bytes) -> int | None:
    base = b.delegation_base.get(delegator)
    if base is None:
        return None
    round_, factor = base
    return int(b.reward_factors.get((orchestrator, round_), factor))


def delegated_stake(state: Any, delegator: bytes) -> int:
    """A delegator's bond with the rewards it has earned, from the contract's cumulative
    factors: bonded x (its orchestrator's latest factor) / (the factor at its baseline)."""
    d = state.delegations.get(delegator)
    if d is None:
        return 0
    start = _base_factor(state, delegator, d.orchestrator)
    if start is None:  # bonds observed without their round: no earnings known
        return int(d.amount)
    return int(d.amount * state.latest_factor.get(d.orchestrator, PREC) // start)


def _fees_withdrawn(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    """The contract claimed the delegator's earnings first: its bond, as of now, is the new
    baseline."""
    delegator, _amount = c.args
    d = b.delegations.get(delegator)
    if d is not None:
        _set_delegation(b, delegator, d.orchestrator, delegated_stake(b, delegator), c)


def _factor(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    """A reward's new cumulative factor; the orchestrator claims its own earnings, this reward
    included, and the commission joins its bond (as the contract does)."""
    orchestrator, round_, factor, commission = c.args
    b.reward_factors[(orchestrator, round_)] = factor
    b.latest_factor[orchestrator] = factor
    own = b.delegations.get(orchestrator)
    if own is not None and own.orchestrator == orchestrator:
        bonded = delegated_stake(b, orchestrator) + commission
        _set_delegation(b, orchestrator, orchestrator, bonded, c)


def _reward(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    orchestrator, amount = c.args
    _add_stake(b, orchestrator, amount)


def _add_stake(b: Any, orchestrator: bytes, delta: int) -> None:
    stake = b.stakes.get(orchestrator, 0) + delta
    if stake:
        b.stakes[orchestrator] = stake
    elif orchestrator in b.stakes:
        del b.stakes[orchestrator]


def _deposit(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    sender, amount = c.args
    f = b.funds.get(sender, _NO_FUNDS)
    b.funds[sender] = Funds(f.deposit + amount, f.reserve)


def _reserve(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    sender, amount = c.args
    f = b.funds.get(sender, _NO_FUNDS)
    b.funds[sender] = Funds(f.deposit, f.reserve + amount)


def _withdraw(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    sender, deposit, reserve = c.args
    f = b.funds.get(sender, _NO_FUNDS)
    if deposit > f.deposit or reserve > f.reserve:
        return _violate(b, e, "withdraw-exceeds-funds")
    b.funds[sender] = Funds(f.deposit - deposit, f.reserve - reserve)


def _redemption(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    sender, _recipient, paid, ticket_hash = c.args
    f = b.funds.get(sender, _NO_FUNDS)
    # The broker pays from the deposit first and covers any shortfall from the reserve; `paid` is
    # what it paid (the face value, or less when the reserve share ran short).
    from_deposit = min(paid, f.deposit)
    from_reserve = min(paid - from_deposit, f.reserve)
    b.funds[sender] = Funds(f.deposit - from_deposit, f.reserve - from_reserve)
    known = b.tickets.get(ticket_hash)
    if known is not None and known.status != REDEEMED:
        b.tickets[ticket_hash] = _replace_ticket(known, REDEEMED)


def _round(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    b.round = max(b.round, c.args[0])


def _minter(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    names = ("inflation", "inflation_change", "target_bonding_rate", "round_length")
    for name, value in zip(names, c.args, strict=True):
        b.minter_params[name] = value


def _inflation(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    round_, inflation, mintable, active_stake, bonding_rate, supply = c.args
    if round_ in b.minter:
        return _violate(b, e, "round-fixed-twice", str(round_))
    b.minter[round_] = MinterRound(inflation, mintable, active_stake, bonding_rate, supply)


def _unlock(b: Any, e: SignedEvent, c: k.ChainObserved) -> None:
    """Unlocking starts a withdrawal period; funds move only on withdraw."""


def _equivocation(b: Any, e: SignedEvent, q: k.Equivocation) -> None:
    try:
        first, second = decode_verified(q.first), decode_verified(q.second)
    except EventError as exc:
        return _violate(b, e, "bad-evidence", str(exc))
    if first.author != second.author or first.seq != second.seq or first.id == second.id:
        return _violate(b, e, "bad-evidence", "not two different events at one (author, seq)")
    key = (first.author, first.seq)
    if key in b.evidence:
        return
    ids = sorted((first.id, second.id))
    b.evidence[key] = Evidence(first.author, first.seq, ids[0], ids[1], e.author)
    chain = b.job_chains.get(first.author)  # a job key's equivocation is its principal's
    culprit = chain.principal if chain is not None and chain.principal else first.author
    rep = b.reputation.get(culprit, _NO_REPUTATION)
    b.reputation[culprit] = Reputation(
        rep.verified, rep.failed, rep.latency_ms_total, rep.equivocations + 1
    )


def _replace_job(job: Job, **changes: Any) -> Job:
    values = {name: getattr(job, name) for name in Job.__dataclass_fields__}
    values.update(changes)
    return Job(**values)


def _replace_ticket(t: TicketRecord, status: str, claimed: bool | None = None) -> TicketRecord:
    claimed = t.claimed if claimed is None else claimed
    return TicketRecord(t.sender, t.recipient, t.face_value, t.win_prob, status, claimed)


_NO_FUNDS = Funds()
_NO_ADDRESS = bytes(20)
_NO_REPUTATION = Reputation()

_HANDLERS: dict[type, Callable[[Any, SignedEvent, Any], None]] = {
    k.Offer: _offer,
    k.OfferWithdrawn: _offer_withdrawn,
    k.ChainObserved: _chain_observed,
    k.Equivocation: _equivocation,
    k.JobChainOpened: _job_chain_opened,
    k.VerdictSummary: _verdict_summary,
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
_CHAIN_HANDLERS: dict[str, Callable[[Any, SignedEvent, k.ChainObserved], None]] = {
    "bond": _bond,
    "rebond": _bond,
    "unbond": _unbond,
    "reward": _reward,
    "bonded": _bonded,
    "unbonded": _unbonded,
    "rebonded": _rebonded,
    "deposit": _deposit,
    "reserve": _reserve,
    "withdraw": _withdraw,
    "redemption": _redemption,
    "round": _round,
    "unlock": _unlock,
    "minter": _minter,
    "inflation": _inflation,
    "factor": _factor,
    "fees_withdrawn": _fees_withdrawn,
}
