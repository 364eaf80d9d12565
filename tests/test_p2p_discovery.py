"""Peer exchange: nodes given one seed find each other; what a peer names is checked first."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest
import trio
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.peer.id import ID

from events import kinds as k
from events.author import Author
from events.crypto import LocalKeySigner
from node.cli.main import build_parser
from node.cli.node import start_config
from node.config import ConfigError, build_config
from p2p.config import P2PConfig
from p2p.discovery import ANSWER_PEERS, PEERS_ANSWER, PEERS_PROTOCOL, parse_answer
from p2p.errors import P2PError
from p2p.framing import MessageStream
from p2p.gossip import events_topic
from p2p.host import running_host
from p2p.identity import load_or_create_identity, peer_id_of
from p2p.localnet import LOOPBACK, open_local_nodes
from p2p.node import P2PNode
from p2p.peers import parse_peer_addr
from tests.conftest import key

QUICK = P2PConfig(sync_interval_s=60.0, peer_exchange_s=0.2)
LOOP = ipaddress.ip_address("127.0.0.1")
LAN = ipaddress.ip_address("192.168.1.20")
PUBLIC = ipaddress.ip_address("11.22.33.44")  # a global address: only parsed, never dialled
_POLL_S = 0.02  # connection counts offer no event to wait on


def a_peer_id(n: int) -> str:
    """A valid peer id nobody listens as (secp256k1, from a fixed secret)."""
    return ID.from_pubkey(create_new_key_pair(key(200 + n)).public_key).to_base58()


def topic_peers(node: P2PNode) -> int:
    return len(node.peers.topic_peers())


async def test_nodes_given_one_seed_find_each_other_and_gossip_over_their_own_mesh(
    tmp_path: Path,
) -> None:
    async with open_local_nodes(tmp_path, 5, QUICK, discover=True) as nodes:
        seed, leaves = nodes[0], nodes[1:]
        for leaf in leaves:
            await leaf.connect(seed.addrs[0])
        # a leaf's mesh (the seed) is 3 short of 4: it ends connected to all the others
        with trio.fail_after(20):
            while min(topic_peers(n) for n in nodes) < len(nodes) - 1:
                await trio.sleep(_POLL_S)
        topic = events_topic(QUICK.network)
        with trio.fail_after(10):  # and meshes with them (D_lo = 4), not only with the seed
            while min(len(n.running.router.mesh.get(topic, ())) for n in leaves) < 4:
                await trio.sleep(_POLL_S)
        assert sum(n.peers.connected for n in leaves) >= 3
        # the seed goes away: the leaves still reach each other by gossip
        await seed.running.host.close()
        author = Author(LocalKeySigner(key(90)))
        event = author.sign(k.Offer(5, 1, ("transcode:h264",), 2, "p", ("/ip4/1.2.3.4/tcp/1",)), 1)
        await leaves[0].publish(event)
        with trio.fail_after(10):
            for leaf in leaves[1:]:
                await leaf.wait_until(lambda leaf=leaf: leaf.ingest.heads.get(event.author) == 1)
        assert all(leaf.sync.stored == 0 for leaf in leaves)  # by gossip, not by sync


async def test_leaves_of_a_seed_that_prunes_them_mesh_among_themselves(tmp_path: Path) -> None:
    # a seed everyone dials keeps a mesh of 1 and prunes the rest: counting connections, a leaf
    # would sit at its one bootstrap peer with an empty mesh
    seed_config = P2PConfig(sync_interval_s=60.0, degree=1, degree_low=1, degree_high=1)
    leaf_config = dataclasses.replace(QUICK, peers_target=2)
    topic = events_topic(QUICK.network)
    async with (
        open_local_nodes(tmp_path / "seed", 1, seed_config) as (seed,),
        open_local_nodes(tmp_path / "leaves", 4, leaf_config, discover=True) as leaves,
    ):
        for leaf in leaves:
            await leaf.connect(seed.addrs[0])
        seed_id = seed.running.host.get_id()

        def mesh(node: P2PNode) -> set[ID]:
            return set(node.running.router.mesh.get(topic, set()))

        # every leaf has a mesh of 2 (the target), of other leaves but for the one the seed kept
        def settled() -> bool:
            short = min(len(mesh(leaf)) for leaf in leaves) < 2
            return not short and sum(seed_id in mesh(leaf) for leaf in leaves) <= 1

        with trio.fail_after(30):
            while not settled():
                await trio.sleep(_POLL_S)
        assert len(seed.running.router.mesh.get(topic, ())) <= 1


async def test_a_node_at_its_target_asks_nobody(tmp_path: Path) -> None:
    config = dataclasses.replace(QUICK, peers_target=1)
    async with open_local_nodes(tmp_path, 3, config, discover=True) as (a, b, c):
        await a.connect(b.addrs[0])
        await c.connect(b.addrs[0])
        with trio.fail_after(10):
            while topic_peers(a) < 1 or topic_peers(c) < 1:
                await trio.sleep(_POLL_S)
        for _ in range(3):
            assert await a.peers.round() == 0
        assert a.peers.dialed == 0 and c.peers.dialed == 0
        assert topic_peers(a) == 1 and topic_peers(c) == 1


async def test_a_lying_answer_costs_one_dial_and_a_malformed_one_a_penalty(
    tmp_path: Path,
) -> None:
    async with open_local_nodes(tmp_path, 4, QUICK) as (asker, liar, other, honest):
        await asker.connect(liar.addrs[0])
        with trio.fail_after(10):
            while topic_peers(asker) < 1:
                await trio.sleep(_POLL_S)
        # the liar names a peer id at the address of another node: Noise shows the dial wrong
        other_host, other_port = other.addrs[0].split("/")[2], other.addrs[0].split("/")[4]
        answers = [[[a_peer_id(1), [f"/ip4/{other_host}/tcp/{other_port}"]]]]

        async def lie(stream):  # type: ignore[no-untyped-def]
            ms = MessageStream(stream, 4096, 5.0)
            await ms.send([PEERS_ANSWER, answers[0]])
            await stream.close()

        liar.running.host.set_stream_handler(PEERS_PROTOCOL, lie)
        asker.peers.config = dataclasses.replace(QUICK, peers_target=6)  # rounds run by hand
        assert await asker.peers.round() == 0
        assert asker.peers.dialed == 1 and asker.peers.connected == 0
        assert await asker.peers.round() == 0  # the same lie again: not dialled again
        assert asker.peers.dialed == 1
        # nor that address under a new id (a liar cannot make its askers flood someone)
        answers[0] = [[a_peer_id(3), [f"/ip4/{other_host}/tcp/{other_port}"]]]
        assert await asker.peers.round() == 0
        assert asker.peers.dialed == 1
        liar_name = liar.running.host.get_id().to_base58()
        assert asker.guard.scores.points(liar_name, trio.current_time()) == 0
        answers[0] = [["not a peer id", ["/ip4/127.0.0.1/tcp/1"]]]
        assert await asker.peers.round() == 0
        assert asker.guard.scores.points(liar_name, trio.current_time()) > 0
        # but an honest peer naming that address under its real id gets it dialled: the liar
        # cannot keep it from the asker
        await honest.connect(other.addrs[0])
        await asker.connect(honest.addrs[0])
        with trio.fail_after(10):
            while topic_peers(asker) < 2 or topic_peers(honest) < 2:
                await trio.sleep(_POLL_S)
        assert await asker.peers.round() == 1  # asks the peer it never asked: `honest`
        assert other.running.host.get_id() in asker.running.host.get_connected_peers()


async def test_a_peer_without_the_protocol_is_asked_once(tmp_path: Path) -> None:
    async with open_local_nodes(tmp_path, 1, QUICK) as (node,):
        bare_key = load_or_create_identity(tmp_path / "bare")
        topics = frozenset({events_topic(QUICK.network)})
        bare_config = dataclasses.replace(QUICK, listen=(LOOPBACK,))
        async with running_host(bare_key, bare_config, topics) as bare:
            await bare.pubsub.subscribe(events_topic(QUICK.network))  # gossips, like a JS peer
            with trio.fail_after(5):
                await bare.host.connect(parse_peer_addr(node.addrs[0]))
            with trio.fail_after(10):
                while topic_peers(node) < 1:
                    await trio.sleep(_POLL_S)
            node.peers.config = dataclasses.replace(QUICK, peers_target=6)  # by hand
            assert await node.peers.round() == 0
            assert peer_id_of(bare_key) in node.peers._no_exchange
            opened = []
            real = node.running.host.new_stream

            async def counting(peer: ID, protocols: list[str]):  # type: ignore[no-untyped-def]
                opened.append(peer)
                return await real(peer, protocols)

            node.running.host.new_stream = counting  # type: ignore[method-assign]
            assert await node.peers.round() == 0
            assert opened == []


def test_addresses_are_dialled_only_in_the_answering_peers_scope() -> None:
    peer = a_peer_id(2)
    answer = [[peer, ["/ip4/127.0.0.1/tcp/4001", "/ip4/192.168.1.7/tcp/4001",
                      "/ip4/11.22.33.55/tcp/4001", "/ip6/::1/tcp/4001"]],
              [a_peer_id(4), ["/ip4/100.64.1.1/tcp/4001"]]]  # fmt: skip

    def dialled(via: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[str]:
        return [str(a) for info in parse_answer(answer, via) for a in info.addrs]

    assert dialled(LOOP) == [
        "/ip4/127.0.0.1/tcp/4001", "/ip4/192.168.1.7/tcp/4001", "/ip4/11.22.33.55/tcp/4001",
        "/ip6/::1/tcp/4001", "/ip4/100.64.1.1/tcp/4001",
    ]  # fmt: skip
    assert dialled(LAN) == [
        "/ip4/192.168.1.7/tcp/4001", "/ip4/11.22.33.55/tcp/4001", "/ip4/100.64.1.1/tcp/4001"
    ]  # fmt: skip
    assert dialled(PUBLIC) == ["/ip4/11.22.33.55/tcp/4001"]
    never = ["/ip4/0.0.0.0/tcp/4001", "/ip4/169.254.1.1/tcp/4001", "/ip4/224.0.0.1/tcp/4001",
             "/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/4001",
             "/ip4/127.0.0.1/tcp/4001/p2p-circuit", "/dns4/localhost/tcp/4001"]  # fmt: skip
    for addr in never:
        assert parse_answer([[peer, [addr]]], LOOP) == [], addr


@pytest.mark.parametrize(
    "answer",
    [
        {"peers": []},
        [[a_peer_id(3)]],
        [[a_peer_id(3), "/ip4/127.0.0.1/tcp/1"]],
        [[a_peer_id(3), ["/ip4/127.0.0.1/tcp/1"] * 5]],
        [["Qm-not-base58!", ["/ip4/127.0.0.1/tcp/1"]]],
        [[a_peer_id(3), ["not a multiaddr"]]],
        [[a_peer_id(3), [7]]],
        [[a_peer_id(3), ["/ip4/127.0.0.1/tcp/1"]]] * (ANSWER_PEERS + 1),
    ],
)
def test_a_malformed_answer_is_refused(answer: object) -> None:
    with pytest.raises(P2PError):
        parse_answer(answer, LOOP)


def test_the_target_is_configurable_and_checked(tmp_path: Path) -> None:
    args = ["node", "start", "--data-dir", "d", "--peers", "0"]
    assert start_config(build_parser(args).parse_args(args)).peers_target == 0
    default = ["node", "start", "--data-dir", "d"]
    assert start_config(build_parser(default).parse_args(default)).peers_target == 4
    raw = {"roles": ["delegator"], "data_dir": "d", "ledger": {"kind": "embedded"}}
    assert build_config({**raw, "p2p": {"peers": 9}}, tmp_path).p2p.peers_target == 9
    assert build_config(raw, tmp_path).p2p.peers_target == 4
    with pytest.raises(ConfigError, match=r"p2p\.peers"):
        build_config({**raw, "p2p": {"peers": -1}}, tmp_path)
    with pytest.raises(ValueError, match="peers_target"):
        P2PConfig(peers_target=-1)
