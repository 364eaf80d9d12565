"""An open network: peers that are not castnet nodes (a worker, a JS libp2p peer) and strangers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import trio

from events import kinds as k
from events.author import Author
from events.crypto import LocalKeySigner, keccak256
from events.envelope import SignedEvent
from node.cli.main import build_parser
from node.cli.node import main as node_cli
from node.cli.node import start_config
from p2p.admission import NO_STANDING
from p2p.config import P2PConfig
from p2p.gossip import encode_batch, events_topic
from p2p.host import OUTBOUND_QUEUE, running_host
from p2p.identity import load_or_create_identity, peer_id_of
from p2p.localnet import LOOPBACK, connect, open_local_nodes
from p2p.node import P2PNode
from p2p.peers import parse_peer_addr
from p2p.sync import not_supported
from tests.conftest import key

FAST = P2PConfig(sync_interval_s=60.0)
# what `castnet node start` runs with by default (admission by standing), periodic sync slowed
_START = ["node", "start", "--data-dir", "unused"]
ADMIT = dataclasses.replace(
    start_config(build_parser(_START).parse_args(_START)), sync_interval_s=60.0
)
_POLL_S = 0.01  # a peer's ban and queue lengths offer no event to wait on


def offer(author: Author, price: int) -> SignedEvent:
    body = k.Offer(price, 1, ("transcode:h264",), 2, "peer", ("/ip4/127.0.0.1/tcp/1",))
    return author.sign(body, 1000 + price)


async def wait_stored(node: P2PNode, event: SignedEvent) -> None:
    with trio.fail_after(20):
        await node.wait_until(lambda: node.ingest.heads.get(event.author, 0) >= event.seq)


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
            assert not_supported(refused.value), refused.value
            # the session the connection scheduled, or this one, marks the peer
            await node.sync._session(bare_id)
            assert bare_id.to_base58() in node.sync.no_sync_peers()
            sessions = node.sync.sessions
            for _ in range(3):  # on reconnect, on a gap, periodically: never queued again
                node.sync.request(bare_id)
                assert bare_id not in node.sync._in_flight
            await node.sync._session(bare_id)  # identify's list says it too, without a stream
            assert node.sync.sessions == sessions


async def test_flood_of_throwaway_key_offers_is_held_back(tmp_path: Path, capsys: Any) -> None:
    delegator, orchestrator = Author(LocalKeySigner(key(60))), Author(LocalKeySigner(key(61)))
    bond = k.ChainObserved("bond", 7, keccak256(b"b"), keccak256(b"t"), 0,
                           (delegator.address, orchestrator.address, 10**18))  # fmt: skip
    junk = [offer(Author(LocalKeySigner(keccak256(b"throwaway/%d" % i))), i) for i in range(3000)]
    # A admits by standing; B is open, so anything A forwarded would be stored there
    async with (
        open_local_nodes(tmp_path, 1, ADMIT) as (a,),
        open_local_nodes(tmp_path, 1, FAST, first=1) as (b,),
    ):
        await connect([a, b], [(0, 1)])
        # the delegator's node logs its bond: on A that gives it and its orchestrator standing
        observed = delegator.sign(bond, 1)
        await b.publish(observed)
        await wait_stored(a, observed)

        flooder_key = load_or_create_identity(tmp_path / "flooder")
        flooder_config = dataclasses.replace(FAST, listen=(LOOPBACK,))
        topics = frozenset({events_topic(FAST.network)})
        async with running_host(flooder_key, flooder_config, topics) as flooder:
            flooder_id = peer_id_of(flooder_key)
            with trio.fail_after(5):
                await flooder.host.connect(parse_peer_addr(a.addrs[0]))
                await flooder.pubsub.subscribe(a.gossip.topic)
                await flooder.pubsub.wait_for_subscription(a.running.host.get_id(), a.gossip.topic)
            with trio.fail_after(60):
                for i in range(0, len(junk), 10):  # 300 valid messages of 10 signed Offers
                    if a.guard.is_banned(flooder_id):
                        break
                    while any(len(q) >= 16 for q in flooder.pubsub.peer_queues.values()):
                        await trio.sleep(_POLL_S)  # the flooder's own queue: no event to wait on
                    data = encode_batch([e.raw for e in junk[i : i + 10]])
                    await flooder.pubsub.publish(a.gossip.topic, data)
                    await trio.sleep(0)
                while not a.guard.is_banned(flooder_id):  # penalised per junk message
                    await trio.sleep(_POLL_S)

        # A keeps serving its real peers: a bonded orchestrator's Offer arrives through B
        real = offer(orchestrator, 5)
        await b.publish(real)
        await wait_stored(a, real)
        assert a.admission is not None
        assert a.admission.held[NO_STANDING] >= 10
        assert a.event_count() == b.event_count() == 2  # none stored, none forwarded
        assert b.peer_id in a.connected_peers()
        assert flooder_id.to_base58() in a.guard.banned and not b.guard.banned
        a._write_info()  # what the node writes for `castnet node info` (every 2 s while running)
    capsys.readouterr()
    assert node_cli(["node", "info", "--json", str(tmp_path / "node0")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["admission"]["held_back"][NO_STANDING] == a.admission.held[NO_STANDING]


def test_admission_rule_counterparties_budgets_and_rates() -> None:
    from p2p.admission import AUTHOR_RATE, PEER_RATE, Admission, AdmissionConfig

    admission = Admission(AdmissionConfig(author_rate=1.0, author_burst=2.0, newcomer_burst=1.0))
    ours, stranger, claimer, other = (Author(LocalKeySigner(key(70 + i))) for i in range(4))
    posted = ours.sign(k.JobPosted("transcode", bytes(32), 1, 2000, ("720p",), 9, 1, ()), 1)
    admission.own(posted)
    assert admission.check(offer(stranger, 1), "peer", 0.0) == NO_STANDING
    # a claim on our job makes its author a counterparty, with standing from then on
    claim = stranger.sign(k.JobClaimed(posted.id, 5, 1), 2)
    assert admission.check(claim, "peer", 0.0) is None
    assert admission.check(offer(stranger, 2), "peer", 0.0) is None
    assert admission.check(offer(stranger, 3), "peer", 0.0) == AUTHOR_RATE  # burst of 2 spent
    assert admission.check(offer(stranger, 4), "peer", 1.0) is None  # 1 token/s back
    # a self-claimed deposit: admitted within the peer's newcomer budget, and gives standing
    deposit = k.ChainObserved("deposit", 1, bytes(32), bytes(32), 0, (claimer.address, 10))
    assert admission.check(claimer.sign(deposit, 1), "peer", 0.0) is None
    assert admission.check(offer(claimer, 1), "peer", 0.0) is None
    forged = k.ChainObserved("deposit", 1, bytes(32), bytes(32), 1, (other.address, 10))
    assert admission.check(claimer.sign(forged, 2), "peer", 1.0) is None  # claimer has standing
    third = Author(LocalKeySigner(key(80)))
    own_claim = k.ChainObserved("deposit", 1, bytes(32), bytes(32), 2, (third.address, 10))
    assert admission.check(third.sign(own_claim, 1), "peer", 0.0) == PEER_RATE  # budget spent
    assert admission.held == {NO_STANDING: 1, AUTHOR_RATE: 1, PEER_RATE: 1}


async def test_lazy_gossip_advertises_the_ids_peers_dedupe_on(tmp_path: Path) -> None:
    async with open_local_nodes(tmp_path, 2, FAST) as (a, b):
        await connect([a, b], [(0, 1)])
        event = offer(Author(LocalKeySigner(key(90))), 1)
        await a.publish(event)
        await wait_stored(b, event)
        for node in (a, b):  # what an IHAVE from either carries, and what IWANT looks up
            mcache = node.running.router.mcache
            with trio.fail_after(5):  # cached as it is forwarded, just after it is stored
                while not mcache.window(node.gossip.topic):
                    await trio.sleep(_POLL_S)
            window = mcache.window(node.gossip.topic)
            assert all(node.running.pubsub.seen_messages.has(mid) for mid in window)
            assert all(keccak256(node.running.router.mcache.get(mid).data) == mid for mid in window)
            # forwarding has no back-pressure: each peer's outbound queue has room for bursts
            queues = list(node.running.pubsub.peer_queues.values())
            assert queues and all(q._queue.max_size == OUTBOUND_QUEUE for q in queues)
