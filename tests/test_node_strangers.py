"""What a stranger on the other end of a job does, on the embedded EVM (the protocol contracts, real
deposits and tickets): an orchestrator that bills for pixels it did not make or signs for another
job is never accepted, is suspended, and its segments are redone by an honest one; a gateway that
pays less than the work costs is refused before any work is done."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from fractions import Fraction
from pathlib import Path

import pytest

from chain.client import ProtocolParams
from events import kinds as k
from events.envelope import decode
from node.chain_ledger import ChainLedger
from node.gateway.role import GatewayConfig, GatewayError
from node.local.network import Network, NetworkPlan, default_plan, key_for, open_network
from tests.media_fixtures import video_file

PROFILES = "144p"
EV = Fraction(10**12)


@asynccontextmanager
async def network(
    tmp_path: Path,
    faults: tuple[str, ...],
    gateway: GatewayConfig | None = None,
    ev: Fraction = EV,
) -> AsyncIterator[Network]:
    config = gateway or GatewayConfig(
        profiles=PROFILES, preset="ultrafast", job_timeout_s=120.0,
        max_price_per_pixel=Fraction(10**4), max_ev=4 * EV,
    )  # fmt: skip
    plan: NetworkPlan = default_plan(2, config, faults, ticket_ev=ev)
    names = ["gateway", "delegator", "orchestrator0", "orchestrator1"]
    ledger = ChainLedger.embedded([key_for(plan.seed, n) for n in names],
                                  ProtocolParams(round_length=50, pool_size=2))  # fmt: skip
    assert ledger.kind.startswith("embedded EVM")  # the contracts, not a fake
    async with open_network(tmp_path / "nodes", plan, ledger) as net:
        assert await net.gateway.wait_for_offers(2, 90.0) == 2
        yield net


def own_events(net: Network, member: object, kind: type) -> list:
    node, address = member.node, member.address  # type: ignore[attr-defined]
    found = []
    for _, raw in node.store.read(after=0):
        event = decode(raw)
        speaks_for = node.jobs.principal_of(event.author) or event.author  # its job chain's
        if speaks_for == address and isinstance(k.read_body(event), kind):
            found.append(event)
    return found


def own(net: Network, member: object, kind: type) -> list:
    return [k.read_body(e) for e in own_events(net, member, kind)]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("inflate-pixels", "signed pixel count differs"), ("wrong-job", "result names another job")],
)
async def test_a_lying_orchestrator_is_refused_suspended_and_replaced(
    tmp_path: Path, fault: str, reason: str
) -> None:
    clip = video_file("strangers.mp4", size="256x144", duration=4.0, gop=60)
    async with network(tmp_path, (fault, "")) as net:
        cheat, honest = net.orchestrators
        gateway = net.gateway
        report = await gateway.transcode_file(clip, tmp_path / "out")
        assert report.segments and all(o.result is not None for o in report.segments)
        assert {o.orchestrator for o in report.segments} == {honest.address}
        verdicts = {v.orchestrator: [] for v in gateway.verdicts}
        for v in gateway.verdicts:
            verdicts[v.orchestrator].append(v)
        assert verdicts[cheat.address], "the cheapest orchestrator was tried first"
        assert not any(v.accepted for v in verdicts[cheat.address])
        assert any(reason in v.reason for v in verdicts[cheat.address]), verdicts[cheat.address]
        # (a refusal for balance is the mirror of its balance being off, retried paying in full)
        assert all(
            v.accepted or "insufficient-balance" in v.reason for v in verdicts[honest.address]
        )
        assert cheat.address in gateway.selector.suspended(time.monotonic())
        # the honest orchestrator was paid with tickets and holds them in its own log
        received = own(net, honest, k.TicketReceived)
        assert received and {t.sender for t in received} == {gateway.address}
        # a job's receipts went into its log together (one durable append): consecutive
        # sequence numbers under one signing time
        by_job: dict[bytes, list] = {}
        for event in own_events(net, honest, k.TicketReceived):
            by_job.setdefault(k.read_body(event).job_id, []).append(event)
        for events in by_job.values():
            seqs = [e.seq for e in events]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
            assert len({e.time_ms for e in events}) == 1


async def test_an_underpaying_gateway_is_refused_before_any_work(tmp_path: Path) -> None:
    clip = video_file("strangers.mp4", size="256x144", duration=4.0, gop=60)
    # tickets of 10^8 wei EV against ~2.2 * 10^9 wei of work per segment: the gateway's tickets
    # cover 5% of it (fee_margin 1/20 of the estimate, where an honest gateway pays 110%)
    ev = Fraction(10**8)
    stingy = GatewayConfig(profiles=PROFILES, preset="ultrafast", job_timeout_s=120.0,
                           max_price_per_pixel=Fraction(10**4), max_ev=4 * ev,
                           fee_margin=Fraction(1, 20))  # fmt: skip
    async with network(tmp_path, ("", ""), stingy, ev) as net:
        with pytest.raises(GatewayError):
            await net.gateway.transcode_file(clip, tmp_path / "out")
        for orch in net.orchestrators:
            assert orch.stats.refused >= 1 or orch.stats.jobs == 0
            # no work done that the tickets taken do not cover: the gateway's tickets for a
            # segment it sends while another is in flight make up the other's shortfall (its
            # mirror of the balance holds the other's full fee), so a segment may end up paid
            charged = sum(r.output_pixels for r in own(net, orch, k.JobResult))
            taken = sum(Fraction(t.face_value * t.win_prob, 2**256)
                        for t in own(net, orch, k.TicketReceived))  # fmt: skip
            assert charged * orch.config.price_per_pixel <= taken
        refused = [v for v in net.gateway.verdicts if not v.accepted]
        assert refused and all("balance" in v.reason.lower() for v in refused), refused
