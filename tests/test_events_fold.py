"""The pure fold: job life cycle, stake, funds, tickets, violations, algebraic properties."""

from __future__ import annotations

import functools

from hypothesis import given, settings
from hypothesis import strategies as st

from events import kinds as k
from events.author import Author
from events.crypto import LocalKeySigner
from events.envelope import SignedEvent, sign_event
from events.fold import apply, fold
from events.state import EMPTY, Delegation, Funds, State
from events.state_codec import decode_state, encode_state
from node.local.synth import synth_events
from tests.conftest import key

H = bytes(32)


def _rules(state: State) -> list[str]:
    return [v.rule for v in state.violation_list()]


def _chain(what: str, n: int, *args: object) -> k.ChainObserved:
    return k.ChainObserved(what, 100 + n, bytes([n]) * 32, bytes([n, 1]) * 16, 0, tuple(args))


def test_job_life_cycle_and_reputation(authors: list[Author]) -> None:
    gw, orch, other = authors[0], authors[1], authors[2]
    events = [orch.sign(k.Offer(500, 1, ("transcode:h264",), 2, "p", ()), 1)]
    posted = gw.sign(k.JobPosted("transcode", H, 10, 2000, ("720p",), 800, 1, ()), 2)
    job = posted.id
    events += [
        posted,
        gw.sign(k.JobAssigned(job, orch.address, 500, 1), 3),
        orch.sign(k.JobClaimed(job, 500, 1), 2),  # accepted, before the work
        orch.sign(k.JobResult(job, (H,), 1000, 50), 3),
        gw.sign(k.JobVerdict(job, orch.address, True, "ok", 70), 4),
        # after the verdict, nothing more may happen to the job
        other.sign(k.JobClaimed(job, 400, 1), 1),
        orch.sign(k.JobResult(job, (H,), 1000, 50), 4),
    ]
    state = fold(events)
    assert state.jobs[job].status == "verified"
    assert state.jobs[job].path == ("posted", "assigned", "claimed", "resulted", "verified")
    assert state.jobs[job].output_pixels == 1000
    assert state.reputation[orch.address].verified == 1
    assert state.reputation[orch.address].latency_ms_total == 70
    assert _rules(state) == ["claim-not-assigned", "result-not-assigned"]
    assert state.heads[orch.address].seq == 4


def test_a_result_needs_the_assignees_claim(authors: list[Author]) -> None:
    gw, orch, other = authors[0], authors[1], authors[2]
    events = [orch.sign(k.Offer(5, 1, (), 1, "o", ()), 1)]
    posted = gw.sign(k.JobPosted("transcode", H, 1, 1, (), 10, 1, ()), 1)
    job = posted.id
    events += [
        posted,
        orch.sign(k.JobClaimed(job, 5, 1), 2),  # before the assignment
        gw.sign(k.JobAssigned(job, orch.address, 5, 1), 2),
        other.sign(k.JobClaimed(job, 5, 1), 1),  # not the assignee
        orch.sign(k.JobClaimed(job, 6, 1), 3),  # above the assigned price
        orch.sign(k.JobResult(job, (H,), 10, 1), 4),  # the assignment was never claimed
        orch.sign(k.JobClaimed(job, 5, 1), 5),
        orch.sign(k.JobClaimed(job, 5, 1), 6),
        orch.sign(k.JobResult(job, (H,), 10, 1), 7),
    ]
    state = fold(events)
    assert _rules(state) == [
        "claim-not-assigned",
        "claim-not-assigned",
        "claim-above-assigned-price",
        "result-without-claim",
        "duplicate-claim",
    ]
    assert state.jobs[job].path == ("posted", "assigned", "claimed", "resulted")
    assert state.jobs[job].claims == (orch.address,)


def test_failover_after_failed_attempt(authors: list[Author]) -> None:
    gw, a, b = authors[0], authors[1], authors[2]
    events = [a.sign(k.Offer(1, 1, (), 1, "a", ()), 1), b.sign(k.Offer(1, 1, (), 1, "b", ()), 1)]
    posted = gw.sign(k.JobPosted("transcode", H, 1, 1, (), 10, 1, ()), 2)
    job = posted.id
    events += [
        posted,
        gw.sign(k.JobAssigned(job, a.address, 1, 1), 3),
        gw.sign(k.JobVerdict(job, a.address, False, "timeout", 4000), 4),
        gw.sign(k.JobAssigned(job, b.address, 1, 1), 5),
        a.sign(k.JobResult(job, (), 1, 1), 6),  # too late: no longer assigned
        b.sign(k.JobClaimed(job, 1, 1), 2),
        b.sign(k.JobResult(job, (), 1, 1), 7),
        gw.sign(k.JobVerdict(job, b.address, True, "ok", 900), 8),
    ]
    state = fold(events)
    assert state.jobs[job].status == "verified" and state.jobs[job].attempts == 2
    assert state.jobs[job].path == (
        "posted",
        "assigned",
        "failed",
        "assigned",
        "claimed",
        "resulted",
        "verified",
    )
    assert state.reputation[a.address].failed == 1
    assert state.reputation[b.address].verified == 1
    assert _rules(state) == ["result-not-assigned"]


def test_invalid_transitions_are_violations_not_exceptions(authors: list[Author]) -> None:
    gw, orch, stranger = authors[0], authors[1], authors[2]
    ghost = bytes([7]) * 32
    posted = gw.sign(k.JobPosted("transcode", H, 1, 1, (), 10, 1, (orch.address,)), 1)
    events = [
        orch.sign(k.JobResult(ghost, (), 1, 1), 1),  # a result for a job never posted
        orch.sign(k.JobClaimed(posted.id, 5, 1), 2),  # the job is not known yet
        posted,
        orch.sign(k.JobClaimed(posted.id, 5, 1), 3),  # not assigned
        orch.sign(k.Offer(5, 1, (), 1, "o", ()), 4),
        stranger.sign(k.Offer(5, 1, (), 1, "s", ()), 1),
        stranger.sign(k.JobClaimed(posted.id, 5, 1), 2),  # not assigned either
        stranger.sign(k.JobAssigned(posted.id, orch.address, 5, 1), 3),  # not the poster
        gw.sign(k.JobVerdict(posted.id, orch.address, True, "ok", 1), 2),  # never assigned
        orch.sign(k.OfferWithdrawn("bye"), 6),
        orch.sign(k.OfferWithdrawn("bye again"), 7),
    ]
    state = fold(events)
    assert _rules(state) == [
        "result-unknown-job",
        "claim-unknown-job",
        "claim-not-assigned",
        "claim-not-assigned",
        "assign-by-non-poster",
        "verdict-wrong-orchestrator",
        "withdraw-without-offer",
    ]
    assert state.jobs[posted.id].status == "posted"
    assert orch.address not in state.offers


def test_stake_funds_and_chain_dedup(authors: list[Author]) -> None:
    obs1, obs2 = authors[0], authors[1]
    d, o1, o2, sender = (bytes([i]) * 20 for i in (1, 2, 3, 4))
    bond = _chain("bond", 1, d, o1, 100)
    events = [
        obs1.sign(bond, 1),
        obs2.sign(bond, 1),  # the same chain log seen by a second observer counts once
        obs1.sign(_chain("bond", 2, d, o2, 50), 2),  # moves all 150 to o2
        obs1.sign(_chain("unbond", 3, d, o2, 30), 3),
        obs1.sign(_chain("unbond", 4, d, o2, 1000), 4),  # more than bonded
        obs1.sign(_chain("reward", 5, o2, 7), 5),
        obs1.sign(_chain("deposit", 6, sender, 1000), 6),
        obs1.sign(_chain("reserve", 7, sender, 500), 7),
        obs1.sign(
            _chain("redemption", 8, sender, o2, 1200, H), 8
        ),  # 1000 from deposit, 200 reserve
        obs1.sign(_chain("round", 9, 42), 9),
    ]
    state = fold(events)
    assert dict(state.stakes) == {o2: 127}
    assert state.delegations[d].amount == 120
    assert state.funds[sender] == Funds(0, 300)
    assert state.round == 42
    assert _rules(state) == ["unbond-exceeds-bond"]


def test_bonding_logs_track_the_contracts_stake(authors: list[Author]) -> None:
    obs = authors[0]
    d, o1, o2, none = (bytes([i]) * 20 for i in (1, 2, 3, 0))
    logs = [
        _chain("bonded", 1, o1, o1, none, 500, 500),  # o1 bonds to itself
        _chain("bonded", 2, d, o1, none, 100, 100),  # d delegates 100 to o1
        _chain("reward", 3, o1, 60),  # o1's total 660; d's share shows at its next log
        _chain("bonded", 4, d, o1, o1, 10, 122),  # 12 of earnings claimed, 10 new tokens
        _chain("unbonded", 5, d, o1, 22, 100),
        _chain("rebonded", 6, d, o1, 22, 122),
        _chain("bonded", 7, d, o2, o1, 8, 130),  # moves 122 from o1, adds 8 on o2
        _chain("unbonded", 8, d, o2, 1000, 0),  # more than o2 holds
        _chain("unbonded", 9, d, o2, 130, 0),  # all of it: the delegation ends
        _chain("rebonded", 10, d, o2, 50, 50),  # from an unbonded lock
        _chain("bonded", 11, d, o1, o2, 0, 50),  # a move with no new tokens
    ]
    states = []
    for seq, body in enumerate(logs, start=1):
        states.append(fold([obs.sign(body, seq)], states[-1] if states else EMPTY))
    stake_after = [dict(s.stakes) for s in states]
    assert stake_after[3] == {o1: 670}  # 500 + 100 + 60 + 10
    assert states[3].delegations[d] == Delegation(o1, 122)
    assert stake_after[5] == {o1: 670}
    assert stake_after[6] == {o1: 548, o2: 130}
    assert states[6].delegations[d] == Delegation(o2, 130)
    assert stake_after[8] == {o1: 548}  # o2's zero stake is dropped
    assert d not in states[8].delegations
    assert states[10].delegations[d] == Delegation(o1, 50)
    assert dict(states[10].stakes) == {o1: 598}
    assert _rules(states[-1]) == ["unbond-exceeds-stake"]


def test_bonding_logs_that_break_the_contracts_rules_are_violations(
    authors: list[Author],
) -> None:
    obs = authors[0]
    d, o1, o2 = (bytes([i]) * 20 for i in (1, 2, 3))
    events = [
        obs.sign(_chain("bonded", 1, d, o1, bytes(20), 100, 50), 1),  # amount above total
        obs.sign(_chain("bonded", 2, d, o1, bytes(20), 100, 100), 2),
        obs.sign(_chain("bonded", 3, d, o2, o1, 0, 300), 3),  # moves more than o1 holds
        obs.sign(_chain("unbonded", 4, d, o2, 1, 0), 4),  # o2 holds nothing
    ]
    state = fold(events)
    assert dict(state.stakes) == {o1: 100}
    assert state.delegations[d] == Delegation(o1, 100)
    assert _rules(state) == ["bond-above-bonded", "bond-move-exceeds-stake", "unbond-exceeds-stake"]


def test_new_chain_args_round_trip_on_the_wire(authors: list[Author]) -> None:
    d, o = bytes([1]) * 20, bytes([2]) * 20
    for body in (
        _chain("bonded", 1, d, o, bytes(20), 5, 7),
        _chain("unbonded", 2, d, o, 5, 2),
        _chain("rebonded", 3, d, o, 5, 7),
    ):
        event = authors[0].sign(body, 1)
        assert k.read_body(event) == body
        assert body.arg("bonded") == body.args[-1]


def test_the_recipients_redemption_may_follow_the_chains(authors: list[Author]) -> None:
    """On a real chain the watcher can log the broker's redemption before the orchestrator logs
    its own: that is one redemption, not two; a second one of its own still is."""
    gw, orch = authors[0], authors[1]
    th = bytes([9]) * 32
    events = [
        orch.sign(k.TicketReceived(th, gw.address, 1000, 2**255, True, b""), 1),
        orch.sign(_chain("redemption", 2, gw.address, orch.address, 1000, th), 2),
        orch.sign(k.TicketRedeemed(th, gw.address, 1000, H, 5), 3),
    ]
    state = fold(events)
    assert state.tickets[th].status == "redeemed" and _rules(state) == []
    again = fold([*events, orch.sign(k.TicketRedeemed(th, gw.address, 1000, H, 6), 4)])
    assert _rules(again) == ["ticket-redeemed-twice"]


def test_tickets_replay_and_double_redemption(authors: list[Author]) -> None:
    gw, orch = authors[0], authors[1]
    th = bytes([9]) * 32
    issued = k.TicketIssued(th, orch.address, 1000, 2**255, 1, H, 0, H, bytes(65), b"")
    events = [
        gw.sign(issued, 1),
        gw.sign(issued, 2),  # the same ticket again
        gw.sign(
            k.TicketIssued(bytes([8]) * 32, orch.address, 1000, 2**255, 1, H, 0, H, bytes(65), b""),
            3,
        ),  # nonce 1 reused for this rand
        orch.sign(k.TicketReceived(th, gw.address, 1000, 2**255, True, b""), 1),
        orch.sign(k.TicketRedeemed(th, gw.address, 1000, H, 5), 2),
        orch.sign(k.TicketRedeemed(th, gw.address, 1000, H, 6), 3),
    ]
    state = fold(events)
    assert state.tickets[th].status == "redeemed"
    assert _rules(state) == ["ticket-replayed", "ticket-nonce-reused", "ticket-redeemed-twice"]


def test_equivocation_evidence_costs_reputation(authors: list[Author]) -> None:
    cheat, reporter = authors[1], authors[2]
    signer = LocalKeySigner(key(1))
    first = sign_event(signer, version=1, kind=2, seq=1, prev=b"", time_ms=1, body=["a"])
    second = sign_event(signer, version=1, kind=2, seq=1, prev=b"", time_ms=1, body=["b"])
    assert first.author == cheat.address
    state = fold(
        [
            reporter.sign(k.Equivocation(first.raw, second.raw), 1),
            reporter.sign(k.Equivocation(first.raw, first.raw), 2),  # not a proof
        ]
    )
    (evidence,) = state.evidence.values()
    assert {evidence.first_id, evidence.second_id} == {first.id, second.id}
    assert state.reputation[cheat.address].equivocations == 1
    assert _rules(state) == ["bad-evidence"]


def test_unknown_kinds_are_counted_and_skipped(authors: list[Author]) -> None:
    signer = authors[0].signer
    odd = sign_event(signer, version=1, kind=777, seq=1, prev=b"", time_ms=0, body=[1, 2])
    state = fold([odd])
    assert state.by_kind["unknown:777"] == 1 and not state.violations
    assert state.heads[signer.address].seq == 1


_LOG: list[SignedEvent] = list(synth_events(400, 4, seed=11))


def test_synthetic_history_folds_clean() -> None:
    state = fold(_LOG)
    assert state.events == 400 and not state.violations
    assert {"verified"} <= {job.status for job in state.jobs.values()}
    assert len(state.offers) == 3


@settings(max_examples=40, deadline=None)
@given(st.integers(0, len(_LOG)))
def test_fold_of_prefix_then_rest_equals_fold_of_all(cut: int) -> None:
    whole = fold(_LOG)
    assert fold(_LOG[cut:], fold(_LOG[:cut])) == whole
    # a snapshot (encoded state) plus the tail gives the same state
    assert fold(_LOG[cut:], decode_state(encode_state(fold(_LOG[:cut])))) == whole


def test_fold_equals_event_by_event_apply() -> None:
    assert functools.reduce(apply, _LOG[:150], EMPTY) == fold(_LOG[:150])


def test_fold_is_deterministic_and_pure() -> None:
    before = fold(_LOG[:100])
    after = fold(_LOG[100:], before)
    assert before == fold(_LOG[:100])  # the input state was not changed
    assert after == fold(_LOG)
