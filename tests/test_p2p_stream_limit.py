"""One peer may have at most `MAX_INBOUND_STREAMS` streams open to a node at once (each may hold
its receive window in the node's memory); streams past that are reset, the refusal is logged
once, and the node goes on serving other peers. Real libp2p hosts on 127.0.0.1."""

from __future__ import annotations

import logging

import pytest
import trio
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.stream.net_stream import INetStream
from libp2p.peer.peerinfo import PeerInfo

from p2p.config import P2PConfig
from p2p.connections import MAX_INBOUND_STREAMS
from p2p.host import running_host
from p2p.localnet import LOOPBACK

HOLD = TProtocol("/castnet-test/hold/1")


async def test_a_peer_cannot_hold_more_than_its_share_of_streams_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    held = 0
    most = 0
    served: set[object] = set()

    async def hold(stream: INetStream) -> None:
        nonlocal held, most
        served.add(stream.muxed_conn.peer_id)
        held += 1
        most = max(most, held)
        try:
            await trio.sleep_forever()
        finally:
            held -= 1

    config = P2PConfig(listen=(LOOPBACK,))
    caplog.set_level(logging.WARNING, logger="castnet.p2p.connections")
    async with (
        running_host(create_new_key_pair(b"\x31" * 32), config, frozenset()) as node,
        running_host(create_new_key_pair(b"\x32" * 32), config, frozenset()) as greedy,
        running_host(create_new_key_pair(b"\x33" * 32), config, frozenset()) as other,
    ):
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
            await other.host.connect(PeerInfo(node.host.get_id(), node.host.get_addrs()))
            await other.host.new_stream(node.host.get_id(), [HOLD])
            while other.host.get_id() not in served:  # the node still serves other peers
                await trio.sleep(0.01)
    assert refused >= 40 and opened <= MAX_INBOUND_STREAMS
    assert most <= MAX_INBOUND_STREAMS
    refusals = [r for r in caplog.records if "refusing more" in r.getMessage()]
    assert len(refusals) == 1
