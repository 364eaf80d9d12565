"""One peer may have at most `MAX_INBOUND_STREAMS` streams open to a node at once (each may hold
its receive window in the node's memory); streams past that are reset, the refusal is logged
once, and the node goes on serving other peers. Real libp2p hosts on 127.0.0.1."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.network.stream.net_stream import INetStream
from libp2p.peer.peerinfo import PeerInfo

from p2p.connections import MAX_INBOUND_STREAMS
from tests.p2p_hosts import loopback_hosts, open_stream

HOLD = TProtocol("/castnet-test/hold/1")


async def test_a_peer_cannot_hold_more_than_its_share_of_streams_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    held = 0
    most = 0
    served: dict[Any, trio.Event] = {}  # peer -> set once the node runs a stream of it

    async def hold(stream: INetStream) -> None:
        nonlocal held, most
        served.setdefault(stream.muxed_conn.peer_id, trio.Event()).set()
        held += 1
        most = max(most, held)
        try:
            await trio.sleep_forever()
        finally:
            held -= 1

    caplog.set_level(logging.WARNING, logger="castnet.p2p.connections")
    async with loopback_hosts(0x31, 0x32, 0x33) as (node, greedy, other):
        node.host.set_stream_handler(HOLD, hold)
        await greedy.host.connect(PeerInfo(node.host.get_id(), node.host.get_addrs()))
        opened = refused = 0
        with trio.fail_after(60):
            for _ in range(MAX_INBOUND_STREAMS + 40):
                try:
                    await greedy.host.new_stream(node.host.get_id(), [HOLD])
                    opened += 1
                except Exception:  # reset by the node: py-libp2p raises its stream errors
                    refused += 1
            await open_stream(other, node, HOLD)  # the node still serves other peers
            await served.setdefault(other.host.get_id(), trio.Event()).wait()
    assert refused >= 40 and opened <= MAX_INBOUND_STREAMS
    assert most <= MAX_INBOUND_STREAMS
    refusals = [r for r in caplog.records if "refusing more" in r.getMessage()]
    assert len(refusals) == 1
