"""Ticket params that expire on the way to the orchestrator (a slow hop, a fast chain) are nobody's
fault: the orchestrator refuses them as expired without taking a ticket, and the gateway asks the
same orchestrator again with fresh params, without counting an attempt or logging a failed
verdict. Real encodes, real libp2p hosts on 127.0.0.1, the embedded EVM."""

from __future__ import annotations

from pathlib import Path

import trio

from node.protocol import EXPIRED
from tests.lone_network import lone_orchestrator
from tests.media_fixtures import video_file

PAST_VALIDITY = 60  # blocks mined after the first tickets: beyond the params' validity (40)


async def test_params_expired_at_the_orchestrator_are_asked_again_not_failed(
    tmp_path: Path,
) -> None:
    # one segment: with two in flight, the second one's tickets were counted against the first's
    # credit, which the expiry withdrew (a balance refusal; see the gateway's mirror)
    clip = video_file("expiry1.mp4", size="256x144", duration=2.0, gop=60)
    async with lone_orchestrator(tmp_path) as (net, ledger):
        (orch,) = net.orchestrators
        payer = net.gateway.payer
        original = payer.tickets
        stale = []

        async def tickets_then_a_fast_chain(params, pixels):  # type: ignore[no-untyped-def]
            made = await original(params, pixels)
            if made and not stale:  # the first tickets: the chain moves past their params
                stale.append(params.expiration_block)
                await trio.to_thread.run_sync(ledger.mine, PAST_VALIDITY)
            return made

        payer.tickets = tickets_then_a_fast_chain  # type: ignore[method-assign]
        report = await net.gateway.transcode_file(clip, tmp_path / "out")

    assert stale, "no tickets were made"
    assert all(o.result is not None for o in report.segments)
    assert {o.orchestrator for o in report.segments} == {orch.address}
    first = next(o for o in report.segments if o.expired)
    assert first.expired == 1 and first.attempts == 1
    assert any(EXPIRED in e for e in first.errors)
    assert all(v.accepted for v in net.gateway.verdicts), [v.reason for v in net.gateway.verdicts]
