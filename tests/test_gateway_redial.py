"""A connection that breaks before the quote (py-libp2p still lists a closed connection and says
"No valid connections available for peer") is dialled again: the orchestrator is not marked
down for it and no attempt is counted, so a job whose only orchestrator hit such a moment still
completes. A connection that keeps breaking is given up after a bounded number of redials. Real
encodes, real libp2p hosts on 127.0.0.1, the embedded EVM; the broken connection is injected
at the quote's stream open."""

from __future__ import annotations

from pathlib import Path

import pytest
from libp2p.network.exceptions import SwarmException

from node.gateway.market import MAX_REDIALS
from node.gateway.role import GatewayError
from tests.lone_network import lone_orchestrator
from tests.media_fixtures import video_file


async def test_a_connection_lost_before_the_quote_is_dialled_again(tmp_path: Path) -> None:
    clip = video_file("redial1.mp4", size="256x144", duration=2.0, gop=60)
    async with lone_orchestrator(tmp_path) as (net, _):
        (orch,) = net.orchestrators
        payer = net.gateway.payer
        original = payer.quote
        breaks = {"left": 1}

        async def quote_on_a_stale_connection(peer):  # type: ignore[no-untyped-def]
            if breaks["left"] > 0:
                breaks["left"] -= 1
                raise SwarmException(f"No valid connections available for peer {peer}")
            return await original(peer)

        payer.quote = quote_on_a_stale_connection  # type: ignore[method-assign]

        async def no_quote_ahead(capability: str) -> None:  # every quote is an attempt's own
            return None

        net.gateway.quote_ahead = no_quote_ahead  # type: ignore[method-assign]
        report = await net.gateway.transcode_file(clip, tmp_path / "out")
        assert all(o.result is not None for o in report.segments), report.segments
        first = next(o for o in report.segments if o.redials)
        assert first.redials == 1 and first.attempts == 1
        assert first.orchestrator == orch.address
        verdicts = net.gateway.verdicts
        assert all(v.accepted for v in verdicts), [v.reason for v in verdicts]

        # a connection that never comes back: bounded redials, then the segment fails
        breaks["left"] = 10**6
        with pytest.raises(GatewayError) as failed:
            await net.gateway.transcode_file(clip, tmp_path / "out2")
        # the first try and MAX_REDIALS more, then the orchestrator is down for this segment
        assert str(failed.value).count("No valid connections") == 1 + MAX_REDIALS
        assert "no orchestrator available" in str(failed.value)
