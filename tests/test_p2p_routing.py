"""What is flooded and what is not: job-level events travel in a job chain per pair of parties
(opened by the wallet's binding) to the counterparty only, a node that is not a party stores none
of them, audits fetch a party's job chains by author-limited sync, and reputation comes from the
gateways' network-wide verdict summaries."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import trio
from libp2p.peer.id import ID

from events import kinds as k
from events.audit import audit
from events.author import Author
from events.crypto import LocalKeySigner
from events.envelope import decode
from events.fold import fold
from events.state import Head, State
from node.gateway.role import GatewayConfig
from node.keystore import job_signer, open_job_chain
from node.local.network import default_plan, open_network
from p2p import jobchains
from p2p.admission import JOB_EVENT, Admission
from p2p.config import P2PConfig
from p2p.gossip import encode_batch
from p2p.jobchains import JobChains
from p2p.localnet import connect, open_local_nodes
from storage.store import EventStore
from tests.conftest import key
from tests.fake_ledger import FakeLedger
from tests.media_fixtures import video_file

NET = "castnet-test"
ROOT = Path(__file__).resolve().parents[1]
H = bytes(32)


def _rules(state: State) -> list[str]:
    return [v.rule for v in state.violation_list()]


def _pair(principal: LocalKeySigner, counterparty: bytes) -> tuple[Author, k.JobChainOpened]:
    signer, binding = open_job_chain(principal, counterparty, NET)
    return Author(signer), binding


def test_job_chains_speak_for_their_principal() -> None:
    gw, orch = LocalKeySigner(key(1)), LocalKeySigner(key(2))
    gw_chain, gw_binding = _pair(gw, orch.address)
    orch_chain, orch_binding = _pair(orch, gw.address)
    assert gw_chain.address not in (gw.address, orch.address)
    # derived, not stored: the same key again (a restart), another per counterparty and network
    assert job_signer(gw, orch.address, NET).address == gw_chain.address
    assert job_signer(gw, gw.address, NET).address != gw_chain.address
    assert job_signer(gw, orch.address, "other").address != gw_chain.address

    orch_main = Author(orch)
    posted = None
    events = [orch_main.sign(k.Offer(5, 1, (), 1, "o", ()), 1), gw_chain.sign(gw_binding, 2)]
    posted = gw_chain.sign(k.JobPosted("transcode", H, 1, 1, (), 10, 1, ()), 3)
    job = posted.id
    events += [
        posted,
        gw_chain.sign(k.JobAssigned(job, orch.address, 5, 1), 4),
        orch_chain.sign(orch_binding, 5),
        orch_chain.sign(k.JobClaimed(job, 5, 1), 6),
        orch_chain.sign(k.JobResult(job, (H,), 10, 1), 7),
        gw_chain.sign(k.JobVerdict(job, orch.address, True, "ok", 70), 8),
    ]
    state = fold(events)
    assert _rules(state) == []
    assert state.jobs[job].poster == gw.address and state.jobs[job].assignee == orch.address
    assert state.jobs[job].status == "verified"
    assert state.principal(orch_chain.address) == orch.address
    # the verdict counts for reputation by the gateway's summary, not by itself
    assert orch.address not in state.reputation
    summary = Author(gw).sign(k.VerdictSummary(orch.address, 1, 9, 1, 0, 70), 9)
    after = fold([summary], state)
    assert after.reputation[orch.address].verified == 1
    overlap = Author(gw, after.heads[gw.address]).sign(
        k.VerdictSummary(orch.address, 5, 12, 1, 0, 1), 12
    )
    assert _rules(fold([overlap], after)) == ["summary-overlaps"]

    # an audit holds each summary to the verdicts its period covers (by their signing time);
    # a verdict no period covers (signed after the last summary, or its tally lost in a crash)
    # is not held against the gateway
    def audited(*extra: object) -> list[str]:
        rows = [(i, e.raw) for i, e in enumerate([*events, *extra], start=1)]  # type: ignore[attr-defined]
        report = audit(rows)
        return [p.rule for p in report.problems] + [v.rule for v in report.violations]

    assert audited(summary) == []  # the verdict at 8 lies in [1, 9)
    missed = Author(gw).sign(k.VerdictSummary(orch.address, 9, 20, 1, 0, 70), 20)
    assert audited(missed) == ["summary-mismatch"]  # nothing was verified in [9, 20)
    assert audited() == []  # no summary yet: nothing to check


def test_a_counterpartys_peer_is_recent_while_it_is_heard_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The trimmer keeps the counterparties heard from lately; the oldest note is forgotten
    first once the memory is full."""
    monkeypatch.setattr(jobchains, "MAX_PEERS", 3)
    jobs = JobChains("castnet-dev")
    peer = [ID(bytes([0, 36, 8, 2, 18, 32]) + bytes([i]) * 32) for i in range(5)]
    jobs.note_peer(b"a" * 20, peer[0], now=100.0)
    jobs.note_peer(b"b" * 20, peer[1], now=200.0)
    jobs.note_peer(b"a" * 20, peer[0], now=300.0)  # heard from again
    assert jobs.recent_peers(150.0, now=400.0) == {peer[0]}
    assert jobs.recent_peers(250.0, now=400.0) == {peer[0], peer[1]}
    jobs.note_peer(b"c" * 20, peer[2], now=310.0)
    jobs.note_peer(b"d" * 20, peer[3], now=320.0)  # full: b, the least recently heard, goes
    assert set(jobs.peers) == {b"a" * 20, b"c" * 20, b"d" * 20}
    assert jobs.recent_peers(1000.0, now=400.0) == {peer[0], peer[2], peer[3]}
    assert jobs.recent_peers(0.0, now=400.0) == set()


def test_a_binding_signed_by_someone_else_leaves_its_chain_speaking_for_no_one() -> None:
    gw, orch, thief = (LocalKeySigner(key(n)) for n in (3, 4, 5))
    chain = Author(job_signer(thief, orch.address, NET))
    forged = k.JobChainOpened(
        gw.address,  # claims to speak for the gateway ...
        orch.address,
        NET,
        thief.sign_hash(k.binding_digest(chain.address, orch.address, NET)),  # ... signed by thief
    )
    state = fold(
        [
            chain.sign(forged, 1),
            chain.sign(k.JobPosted("transcode", H, 1, 1, (), 10, 1, ()), 2),
        ]
    )
    assert _rules(state) == ["binding-bad-signature", "job-chain-unbound"]
    assert not state.jobs  # the posting spoke for no one: nothing was posted
    assert state.principal(chain.address) == chain.address


def test_bindings_only_open_a_chain_and_a_job_chain_holds_job_events_only() -> None:
    gw, orch = LocalKeySigner(key(6)), LocalKeySigner(key(7))
    chain, binding = _pair(gw, orch.address)
    main = Author(gw)
    own_key = k.JobChainOpened(
        gw.address, orch.address, NET, gw.sign_hash(k.binding_digest(gw.address, orch.address, NET))
    )
    state = fold(
        [
            main.sign(k.Offer(1, 1, (), 1, "g", ()), 1),
            main.sign(own_key, 2),  # not at seq 1, and the wallet's own key
            chain.sign(binding, 3),
            chain.sign(k.Offer(1, 1, (), 1, "j", ()), 4),  # a network-wide event in a job chain
        ]
    )
    assert _rules(state) == ["binding-not-first", "network-event-in-job-chain"]
    assert chain.address not in state.offers


def test_job_events_are_refused_on_the_topic_in_either_admission_mode() -> None:
    gw, orch = LocalKeySigner(key(8)), LocalKeySigner(key(9))
    chain, binding = _pair(gw, orch.address)
    opened = chain.sign(binding, 1)
    posted = chain.sign(k.JobPosted("transcode", H, 1, 1, (), 10, 1, (orch.address,)), 2)
    offer = Author(orch).sign(k.Offer(1, 1, (), 1, "o", ()), 1)
    for by_standing in (True, False):
        admission = Admission(by_standing=by_standing)
        admission.own(offer)  # standing, so only the kind decides
        admitted, held = admission.filter([opened, posted, offer], "peer", 0.0)
        assert admitted == [offer] and held == 2
        assert admission.held[JOB_EVENT] == 2
    # by default sync, a log written before job chains (job events in the wallet's one chain)
    # still comes whole; a job chain's binding does not, nor its events once it is known
    legacy = Author(gw).sign(k.JobPosted("transcode", H, 1, 1, (), 10, 1, ()), 1)
    jobs = JobChains(NET)
    jobs.learn(opened)
    synced = Admission(by_standing=False, jobs=jobs)
    admitted, held = synced.filter([legacy, opened, posted], "peer", 0.0, topic=False)
    assert admitted == [legacy] and held == 2


def _store_events(node: object) -> list:
    return [decode(raw) for _, raw in node.store.read(after=0)]  # type: ignore[attr-defined]


async def test_job_chains_reach_the_counterparty_only_and_audit_from_a_party(
    tmp_path: Path,
) -> None:
    clip = video_file("routing.mp4", size="256x144", duration=4.0, gop=60)
    config = GatewayConfig(
        profiles="144p", preset="ultrafast", job_timeout_s=120.0,
        max_price_per_pixel=Fraction(10**4), max_ev=Fraction(4 * 10**12),
    )  # fmt: skip
    plan = default_plan(1, config, ticket_ev=Fraction(10**12))
    with trio.fail_after(240):
        async with open_network(tmp_path / "nodes", plan, FakeLedger()) as net:
            assert await net.gateway.wait_for_offers(1, 90.0) == 1
            gateway, (orch,) = net.gateway, net.orchestrators
            third = net.member("delegator").node  # on the network, not a party to the job
            report = await gateway.transcode_file(clip, tmp_path / "out")
            assert report.segments and all(o.result is not None for o in report.segments)
            gw_node, orch_node = gateway.node, orch.node
            chains = sorted(gw_node.jobs.bindings)
            assert len(chains) == 2  # the gateway's towards the orchestrator, and back
            assert {gw_node.jobs.principal_of(a) for a in chains} == {
                gateway.address,
                orch.address,
            }

            # both parties hold the whole pair chain (the last verdict arrives by push)
            def same_heads() -> bool:
                return all(gw_node.ingest.heads.get(a) == orch_node.ingest.heads.get(a)
                           for a in chains)  # fmt: skip

            await orch_node.wait_until(same_heads)
            assert all(gw_node.ingest.heads[a] > 1 for a in chains)

            # the gateway's summary reaches the third node, which folds it into reputation
            summaries = [e for e in _store_events(gw_node) if e.kind == k.VerdictSummary.KIND]
            assert summaries, "the job's end publishes its verdict summary"
            verified = sum(
                b.verified for e in summaries if isinstance(b := k.read_body(e), k.VerdictSummary)
            )
            assert verified == len(report.segments)
            await third.wait_until(
                lambda: third.ingest.heads.get(gateway.address, 0) >= summaries[-1].seq
            )
            seen = fold(_store_events(third))
            assert seen.reputation[orch.address].verified == verified
            assert _rules(seen) == []
            # ... and stored none of the job's events
            stored = _store_events(third)
            assert not [e for e in stored if e.kind in k.JOB_KINDS]
            assert not set(chains) & {e.author for e in stored}
            assert not set(chains) & set(third.ingest.heads)

            # an auditor fetches the gateway's log from it (`castnet audit --fetch`, another
            # process): network-wide events by default sync, then its job chains by asking
            auditor = tmp_path / "auditor"
            fetched = await trio.to_thread.run_sync(
                _cli, "audit", str(auditor), "--json", "--fetch",
                f"{gw_node.addrs[0]}/p2p/{gw_node.peer_id}",
                "--party", "0x" + gateway.address.hex(), "--network", plan_network(net),
            )  # fmt: skip
            assert fetched.returncode == 0, fetched.stderr[-3000:]
            assert " job chain events (2 job chains) from " in fetched.stderr
            cli_report = json.loads(fetched.stdout)
            assert cli_report["exit_code"] == 0 and cli_report["integrity"]["ok"]
            with EventStore.open_dir(auditor) as store:
                rows = list(store.read())
                heads = store.heads()
            assert all(heads[a].seq == gw_node.ingest.heads[a] for a in chains)
            report_ok = audit(rows)
            assert report_ok.clean, [p.describe() for p in report_ok.problems] + [
                v.rule for v in report_ok.violations
            ]
            assert report_ok.state.reputation[orch.address].verified == verified

            events = [decode(raw) for _, raw in rows]
            # a summary that says other than the gateway's verdicts is evidence against it
            main = [e for e in events if e.author == gateway.address]
            liar = Author(net.member("gateway").signer, Head(main[-1].seq, main[-1].id))
            last_until = max(
                b.until_ms for e in summaries if isinstance(b := k.read_body(e), k.VerdictSummary)
            )
            lie = liar.sign(
                k.VerdictSummary(orch.address, last_until, last_until + 10**6, 0, 5, 0),
                last_until,
            )
            lied = audit([*rows, (rows[-1][0] + 1, lie.raw)])
            assert [f.rule for f in lied.evidence()] == ["summary-mismatch"]
            assert not lied.integrity()  # the log itself is intact
            own_lie = lied.integrity(own={gateway.address})  # the gateway auditing its own log
            assert [f.rule for f in own_lie] == ["summary-mismatch"]

            # a job chain rewritten after the fact fails the audit
            gw_chain = next(a for a in chains if gw_node.jobs.principal_of(a) == gateway.address)
            verdict = next(
                e for e in events if e.author == gw_chain and e.kind == k.JobVerdict.KIND
            )
            body = k.read_body(verdict)
            assert isinstance(body, k.JobVerdict)
            rewriter = Author(
                job_signer(net.member("gateway").signer, orch.address, plan_network(net)),
                None,
            )
            rewriter.head = _head_before(events, verdict)
            forged = rewriter.sign(
                k.JobVerdict(body.job_id, body.orchestrator, False, "rewritten", 0),
                verdict.time_ms,
            )
            tampered = [(p, forged.raw if raw == verdict.raw else raw) for p, raw in rows]
            findings = audit(tampered).integrity()
            assert findings, "a rewritten job chain must not audit clean"
            rules = {f.rule for f in findings}
            later = [e for e in events if e.author == gw_chain and e.seq > verdict.seq]
            assert ("chain-broken" in rules) if later else ("bad-signature" not in rules)
            dropped = [(p, raw) for p, raw in rows if raw != verdict.raw]
            if later:
                assert "chain-gap" in {f.rule for f in audit(dropped).integrity()}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=180)  # fmt: skip


def plan_network(net: object) -> str:
    return net.gateway.node.config.network  # type: ignore[attr-defined]


def _head_before(events: list, target: object) -> object:
    before = [
        e
        for e in events
        if e.author == target.author and e.seq == target.seq - 1  # type: ignore[attr-defined]
    ]
    return Head(before[0].seq, before[0].id) if before else None


def test_reading_many_authors_keeps_log_order(tmp_path: Path) -> None:
    """An author-limited sync may name more authors than SQLite binds in one statement."""
    authors = [Author(LocalKeySigner(key(1000 + i))) for i in range(520)]
    events = [a.sign(k.Offer(1, 1, (), 1, "o", ()), 1) for a in authors]
    events += [a.sign(k.OfferWithdrawn("gone"), 2) for a in authors[:10]]
    with EventStore.open_dir(tmp_path) as store:
        store.append(events)
        wanted = [a.address for a in authors[::2]] + [a.address for a in authors[1:11:2]]
        few = store.read_authors(0, wanted[:3], 1000)  # one statement
        many = store.read_authors(0, wanted, 1000)  # a filtered scan
        first = store.read_authors(0, wanted, 100)
        rest = store.read_authors(first[-1][0], wanted, 1000)
    assert [r[4] for r in few] == [e.raw for e in events if e.author in set(wanted[:3])]
    expected = [e.raw for e in events if e.author in set(wanted)]
    assert [r[4] for r in many] == expected and len(first) == 100
    assert [r[4] for r in first + rest] == expected


async def test_a_job_event_on_the_topic_is_held_back_and_costs_its_relayer(tmp_path: Path) -> None:
    """Open admission (a private network) still keeps job chains off the topic."""
    gw, orch = LocalKeySigner(key(20)), LocalKeySigner(key(21))
    chain, binding = _pair(gw, orch.address)
    opened = chain.sign(binding, 1)
    offer = Author(orch).sign(k.Offer(5, 1, (), 1, "o", ()), 1)
    config = P2PConfig(network=NET, admission=False, sync_interval_s=60.0)
    async with open_local_nodes(tmp_path, 2, config) as (a, b):
        await connect([a, b], [(0, 1)])
        assert a.admission is not None and not a.admission.by_standing
        with trio.fail_after(20):
            # B relays a job chain's binding and an offer in one gossip message, as a node
            # running older code would: A stores and forwards the offer only
            await b.running.pubsub.publish(b.gossip.topic, encode_batch([opened.raw, offer.raw]))
            await a.wait_until(lambda: a.ingest.heads.get(orch.address, 0) >= 1)
        assert chain.address not in a.ingest.heads and a.admission.held[JOB_EVENT] == 1
        assert a.guard.scores.points(b.peer_id, trio.current_time()) > 0
        # and a default sync from B does not bring it either
        await b.ingest.submit([opened], "import")
        b.jobs.learn(opened)
        await a.sync.sync_from(b.running.host.get_id())
        assert chain.address not in a.ingest.heads


def test_a_segment_retried_elsewhere_appears_once_and_counts_a_swap() -> None:
    from node.api.metric_families import RoleTally

    gw, liar, honest = (LocalKeySigner(key(n)) for n in (30, 31, 32))
    to_liar, to_honest = (Author(job_signer(gw, o.address, NET)) for o in (liar, honest))
    segment = bytes([7]) * 32
    posting = k.JobPosted("transcode", segment, 1, 1, (), 10, 1, ())
    first = to_liar.sign(posting, 1)
    again = to_honest.sign(posting, 3)
    tally = RoleTally()
    for event in (
        first,
        to_liar.sign(k.JobAssigned(first.id, liar.address, 5, 1), 2),
        to_liar.sign(k.JobVerdict(first.id, liar.address, False, "bad", 0), 2),
        again,
        to_honest.sign(k.JobAssigned(again.id, honest.address, 5, 1), 4),
        to_honest.sign(k.JobVerdict(again.id, honest.address, True, "ok", 9), 5),
    ):
        tally.fold(event.raw)
    assert tally.posted == {"transcode": 1} and tally.swaps == 1
    assert tally.accepted == {"transcode": 1} and tally.rejected == {"transcode": 1}
    assert not tally.segments and not tally.inputs  # nothing left open
