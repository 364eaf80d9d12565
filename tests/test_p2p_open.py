"""An open network: peers that are not castnet nodes (a worker, a JS libp2p peer) and strangers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import trio

from p2p.config import P2PConfig
from p2p.gossip import events_topic
from p2p.host import running_host
from p2p.identity import load_or_create_identity, peer_id_of
from p2p.localnet import LOOPBACK, open_local_nodes
from p2p.peers import parse_peer_addr
from p2p.sync import _not_supported

FAST = P2PConfig(sync_interval_s=60.0)


async def test_peer_without_sync_is_asked_once(tmp_path: Path) -> None:
    async with open_local_nodes(tmp_path, 1, FAST) as (node,):
        # a bare libp2p peer with gossip but no /castnet/sync/1 handler, like a worker
        bare_key = load_or_create_identity(tmp_path / "bare")
        bare_config = dataclasses.replace(FAST, listen=(LOOPBACK,))
        topics = frozenset({events_topic(FAST.network)})
        async with running_host(bare_key, bare_config, topics) as bare:
            bare_id = peer_id_of(bare_key)
            with trio.fail_after(5):
                await bare.host.connect(parse_peer_addr(node.addrs[0]))
            # what the negotiation failure looks like in py-libp2p: recognised as "not served"
            with pytest.raises(Exception) as refused:
                with trio.fail_after(5):
                    await node.sync.sync_from(bare_id)
            assert _not_supported(refused.value), refused.value
            # the session the connection scheduled, or this one, marks the peer
            await node.sync._session(bare_id)
            assert bare_id.to_base58() in node.sync.no_sync_peers()
            sessions = node.sync.sessions
            for _ in range(3):  # on reconnect, on a gap, periodically: never queued again
                node.sync.request(bare_id)
                assert bare_id not in node.sync._in_flight
            await node.sync._session(bare_id)  # identify's list says it too, without a stream
            assert node.sync.sessions == sessions
