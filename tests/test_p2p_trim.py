"""Connection trimming: a node over `max_peers` closes idle connections outside its gossip
mesh, never its mesh, its bootstrap peers, its counterparties or work in progress; a node
redials its bootstrap peers only while it needs them."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.stream.net_stream import INetStream
from libp2p.peer.id import ID

from events import kinds as k
from events.author import Author
from events.crypto import LocalKeySigner
from node.cli.main import build_parser
from node.cli.node import main as node_cli
from node.cli.node import start_config
from node.config import ConfigError, build_config
from p2p.config import MAX_PEERS, P2PConfig
from p2p.host import RunningHost, running_host
from p2p.localnet import LOOPBACK, open_local_nodes
from p2p.node import P2PNode
from p2p.peers import parse_peer_addr
from p2p.trim import low_water
from tests.conftest import key

QUICK = P2PConfig(sync_interval_s=60.0, peer_exchange_s=0.2)
_POLL_S = 0.02  # connection counts offer no event to wait on
BUSY = TProtocol("/castnet-test/busy/1")


# a hub that may keep one connection, trims at once, and has its passes run by hand
HUB = dataclasses.replace(QUICK, peers_target=0, max_peers=1, trim_grace_s=0.0, trim_every_s=600.0)


@contextlib.asynccontextmanager
async def hub_and_bare_peers(
    tmp_path: Path, hub_config: P2PConfig, count: int, first_key: int
) -> AsyncIterator[tuple[P2PNode, list[RunningHost]]]:
    """A hub node and `count` bare libp2p hosts that gossip on no topic (none joins its mesh,
    so only the trimmer's other rules can keep one)."""
    bare_config = dataclasses.replace(QUICK, listen=(LOOPBACK,))
    async with contextlib.AsyncExitStack() as stack:
        (hub,) = await stack.enter_async_context(open_local_nodes(tmp_path, 1, hub_config))
        peers = [
            await stack.enter_async_context(
                running_host(create_new_key_pair(key(first_key + i)), bare_config, frozenset())
            )
            for i in range(count)
        ]
        yield hub, peers


def connected(node: P2PNode) -> set[ID]:
    return set(node.running.host.get_connected_peers())


def mesh(node: P2PNode) -> set[ID]:
    return set(node.running.router.mesh.get(node.gossip.topic, set()))


async def test_a_seed_over_its_limit_trims_idle_leaves_and_they_still_get_its_events(
    tmp_path: Path,
) -> None:
    # a seed that keeps a small mesh (1..3) and at most 4 connections, its trimming passes run
    # by hand; eight leaves dial it
    seed_config = dataclasses.replace(
        QUICK, degree=2, degree_low=1, degree_high=3, max_peers=4, trim_grace_s=0.2,
        trim_every_s=600.0,
    )  # fmt: skip
    leaf_config = dataclasses.replace(QUICK, peers_target=3)
    async with (
        open_local_nodes(tmp_path / "seed", 1, seed_config) as (seed,),
        open_local_nodes(tmp_path / "leaves", 8, leaf_config, discover=True) as leaves,
    ):
        for leaf in leaves:
            await leaf.connect(seed.addrs[0])
        assert len(connected(seed)) == 8
        with trio.fail_after(30):  # the leaves mesh among themselves (peer exchange)
            while min(len(mesh(leaf)) for leaf in leaves) < 3:
                await trio.sleep(_POLL_S)
        with trio.fail_after(10):  # past the grace period, five leaves are idle outside its mesh
            while len(seed.trimmer.choose()) < 5:
                await trio.sleep(_POLL_S)
        kept_mesh = mesh(seed)
        assert 1 <= len(kept_mesh) <= 3
        trimmed = await seed.trimmer.trim()
        assert trimmed == 8 - low_water(4) == 5
        with trio.fail_after(10):  # the disconnects land
            while len(connected(seed)) > low_water(4):
                await trio.sleep(_POLL_S)
        assert kept_mesh <= connected(seed)  # its mesh is never cut
        assert seed.trimmer.trimmed == 5
        assert await seed.trimmer.trim() == 0  # at or under the limit: nothing more

        # every leaf still gets the seed's events by gossip, through the mesh it kept
        author = Author(LocalKeySigner(key(91)))
        event = author.sign(k.Offer(5, 1, ("transcode:h264",), 2, "p", ("/ip4/1.2.3.4/tcp/1",)), 1)
        await seed.publish(event)
        with trio.fail_after(10):
            for leaf in leaves:
                await leaf.wait_until(lambda leaf=leaf: leaf.ingest.heads.get(event.author) == 1)
        assert all(leaf.sync.stored == 0 for leaf in leaves)  # by gossip, not by sync
        # and the trimmed leaves, whose meshes are full, do not come back: none asks for peers
        for leaf in leaves:
            assert await leaf.peers.round() == 0
        assert len(connected(seed)) <= 4


async def test_the_mesh_counterparties_bootstrap_peers_work_and_newcomers_stay(
    tmp_path: Path,
) -> None:
    async with hub_and_bare_peers(tmp_path, HUB, 5, 180) as (hub, peers):
        idle, busy, party, boot, fresh = (p.host.get_id() for p in peers)
        release = trio.Event()

        async def hold(stream: INetStream) -> None:  # work in progress on the hub
            await release.wait()
            await stream.close()

        hub.running.host.set_stream_handler(BUSY, hold)
        for peer in peers:
            await peer.host.connect(parse_peer_addr(hub.addrs[0]))
        held = await peers[1].host.new_stream(hub.running.host.get_id(), [BUSY])
        hub.note_job_peer(b"\x01" * 20, party)
        boot_addr = f"{LOOPBACK.rsplit('/', 1)[0]}/1/p2p/{boot.to_base58()}"
        hub.config = dataclasses.replace(hub.config, bootstrap=(boot_addr,))
        assert not mesh(hub)
        assert set(hub.trimmer.choose()) == {idle, fresh}
        # a counterparty silent for longer than `trim_job_peer_s` is no longer kept for its jobs
        hub.config = dataclasses.replace(hub.config, trim_job_peer_s=0.0)
        assert set(hub.trimmer.choose()) == {idle, fresh, party}
        hub.config = dataclasses.replace(hub.config, trim_job_peer_s=600.0)
        # a newcomer gets `trim_grace_s` before it may be trimmed
        hub.trimmer.config = dataclasses.replace(HUB, trim_grace_s=60.0)
        assert hub.trimmer.choose() == []
        hub.trimmer.config = HUB
        # the most penalised goes first
        hub.guard.penalize(fresh, 2.0, "test")
        assert hub.trimmer.choose()[0] == fresh
        assert await hub.trimmer.trim() == 2
        with trio.fail_after(10):
            while len(connected(hub)) > 3:
                await trio.sleep(_POLL_S)
        assert connected(hub) == {busy, party, boot}
        # once its work is done, a peer is no longer kept for it
        release.set()
        await held.close()
        with trio.fail_after(10):
            while hub.trimmer.choose() != [busy]:
                await trio.sleep(_POLL_S)


async def test_bootstrap_peers_are_redialled_at_once_only_while_the_mesh_is_short(
    tmp_path: Path,
) -> None:
    async with open_local_nodes(tmp_path / "seed", 2, QUICK) as (seed, other):
        config = dataclasses.replace(  # reached first at the start, as `castnet node start` does
            QUICK, bootstrap=(seed.addrs[0],), bootstrap_retry_s=0.05, peers_target=1
        )
        config = dataclasses.replace(config, require_bootstrap=True)
        async with open_local_nodes(tmp_path / "leaf", 1, config, discover=True) as (leaf,):
            seed_id, other_id = seed.running.host.get_id(), other.running.host.get_id()
            await leaf.connect(other.addrs[0])
            with trio.fail_after(10):  # its mesh holds both
                while mesh(leaf) != {seed_id, other_id}:
                    await trio.sleep(_POLL_S)
            # count the bootstrap loop's passes over the missing seed (it asks for its ban first)
            passes = 0
            ten_passes = trio.Event()
            is_banned = leaf.guard.is_banned

            def counting(peer: ID) -> bool:
                nonlocal passes
                if peer == seed_id:
                    passes += 1
                    if passes >= 10:
                        ten_passes.set()
                return is_banned(peer)

            leaf.guard.is_banned = counting  # type: ignore[method-assign]
            await seed.running.host.disconnect(leaf.running.host.get_id())  # the seed trims it
            with trio.fail_after(10):
                await ten_passes.wait()
            assert seed_id not in connected(leaf)  # a mesh at its target: the seed is left alone
            # ... but for a redial once per bootstrap_idle_redial_s (a seed that restarted)
            leaf.config = dataclasses.replace(config, bootstrap_idle_redial_s=0.2)
            with trio.fail_after(10):
                while seed_id not in connected(leaf):
                    await trio.sleep(_POLL_S)
            leaf.config = config
            await seed.running.host.disconnect(leaf.running.host.get_id())
            await other.running.host.disconnect(leaf.running.host.get_id())
            with trio.fail_after(10):  # no peer left: back to the seed at once
                while seed_id not in connected(leaf):
                    await trio.sleep(_POLL_S)


def test_max_peers_from_the_flag_and_the_config_file(tmp_path: Path) -> None:
    def parsed(*flags: str) -> P2PConfig:
        args = ["node", "start", "--data-dir", str(tmp_path), *flags]
        return start_config(build_parser(args).parse_args(args))

    assert parsed().max_peers == MAX_PEERS == 64
    assert parsed("--max-peers", "0").max_peers == 0  # no limit
    with pytest.raises(ValueError, match=r"max_peers must be 0 .* peer target \(4\)"):
        parsed("--max-peers", "3")
    assert parsed().inbound_per_ip == 8
    assert parsed("--inbound-per-ip", "0").inbound_per_ip == 0  # no limit
    with pytest.raises(ValueError, match="inbound_per_ip"):
        parsed("--inbound-per-ip", "-1")
    base = {"roles": ["delegator"], "ledger": {"kind": "embedded"}}
    config = build_config({**base, "p2p": {"max_peers": 100}, "data_dir": "d"}, tmp_path)
    assert config.p2p.max_peers == 100
    assert (
        build_config(
            {**base, "p2p": {"inbound_per_ip": 32}, "data_dir": "d"}, tmp_path
        ).p2p.inbound_per_ip
        == 32
    )
    with pytest.raises(ConfigError, match=r"p2p\.max_peers"):
        build_config({**base, "p2p": {"max_peers": -1}, "data_dir": "d"}, tmp_path)
    assert low_water(64) == 48 and low_water(1) == 1


async def test_node_info_shows_the_peer_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with open_local_nodes(tmp_path, 2, QUICK) as (a, b):
        await b.connect(a.addrs[0])
        with trio.fail_after(10):
            while not mesh(a):
                await trio.sleep(_POLL_S)
        a._write_info()  # what the node writes for `castnet node info` when its figures change
    capsys.readouterr()
    assert node_cli(["node", "info", "--json", str(tmp_path / "node0")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["peers"]["connected"] == 1 and info["peers"]["mesh"] == 1
    assert info["peers"]["max"] == MAX_PEERS and info["peers"]["trimmed"] == 0
    assert node_cli(["node", "info", str(tmp_path / "node0")]) == 0
    assert "peers:    1 connected (limit 64; 0 trimmed), gossip mesh 1" in capsys.readouterr().out


async def test_an_inbound_connection_gives_its_slot_back_when_it_closes(tmp_path: Path) -> None:
    # py-libp2p held each inbound connection's slot (300 in all) until the node stopped: a seed
    # that had accepted 300 connections over its life refused every newcomer after that
    async with open_local_nodes(tmp_path / "seed", 1, QUICK) as (seed,):
        network = seed.running.host.get_network()
        for i in range(3):
            async with open_local_nodes(tmp_path / f"peer{i}", 1, QUICK) as (peer,):
                await peer.connect(seed.addrs[0])
                assert network._inbound_limiter.borrowed_tokens == 1
                await seed.running.host.disconnect(peer.running.host.get_id())  # trimmed, say
                with trio.fail_after(10):
                    while network._inbound_limiter.borrowed_tokens:
                        await trio.sleep(_POLL_S)
        assert not network.connections


async def test_one_address_holds_at_most_its_share_of_inbound_connections(tmp_path: Path) -> None:
    config = dataclasses.replace(QUICK, inbound_per_ip=2)
    async with (
        open_local_nodes(tmp_path / "seed", 1, config) as (seed,),
        open_local_nodes(tmp_path / "peers", 4, QUICK) as peers,
    ):
        network = seed.running.host.get_network()
        network.castnet_ip_limited = lambda ip: True  # loopback counts here (not by default)
        for peer in peers[:2]:
            await peer.connect(seed.addrs[0])
        with pytest.raises(Exception), trio.fail_after(10):  # noqa: B017 (py-libp2p's dial error)
            await peers[2].connect(seed.addrs[0])
        assert network.castnet_ip_refused >= 1
        assert connected(seed) == {p.running.host.get_id() for p in peers[:2]}
        await seed.running.host.disconnect(peers[0].running.host.get_id())  # one goes: room
        with trio.fail_after(10):
            while sum(network.castnet_inbound_ips.values()) >= 2:
                await trio.sleep(_POLL_S)
        await peers[3].connect(seed.addrs[0])
        assert peers[3].running.host.get_id() in connected(seed)


async def test_the_limit_per_address_spares_loopback_by_default() -> None:
    from p2p.connections import _refused, ip_key, limit_inbound_per_ip

    class Swarm:  # only the attributes the rule reads
        pass

    swarm = Swarm()
    limit_inbound_per_ip(swarm, 8)
    lan, loop = ipaddress.ip_address("192.168.1.20"), ipaddress.ip_address("127.0.0.1")
    assert not _refused(swarm, lan, 7)  # type: ignore[arg-type]
    assert _refused(swarm, lan, 8)  # type: ignore[arg-type]
    assert not _refused(swarm, loop, 100)  # type: ignore[arg-type]
    limit_inbound_per_ip(swarm, 0)
    assert not _refused(swarm, lan, 100)  # type: ignore[arg-type]
    # one host's IPv6 addresses count together (its /64); IPv4 mapped into IPv6 counts as IPv4
    one, two = ipaddress.ip_address("2001:db8:1:2::5"), ipaddress.ip_address("2001:db8:1:2:ff::9")
    assert ip_key(one) == ip_key(two) != ip_key(ipaddress.ip_address("2001:db8:1:3::5"))
    assert ip_key(ipaddress.ip_address("::ffff:127.0.0.1")) == loop
    assert ip_key(ipaddress.ip_address("::1")).is_loopback and ip_key(lan) == lan


async def test_a_close_that_hangs_is_cut_at_the_socket(tmp_path: Path) -> None:
    # py-libp2p marks a connection closed before it writes its goodbye; a peer that does not read
    # holds that write, and a close cancelled there left an open connection no longer listed
    hub_config = dataclasses.replace(HUB, dial_timeout_s=0.3)
    async with hub_and_bare_peers(tmp_path, hub_config, 2, 190) as (hub, peers):
        for peer in peers:
            await peer.host.connect(parse_peer_addr(hub.addrs[0]))

        async def hangs(peer: ID) -> None:
            await trio.sleep_forever()

        hub.running.host.disconnect = hangs  # type: ignore[method-assign]
        assert await hub.trimmer.trim() == 1
        assert hub.trimmer.aborted == 1
        with trio.fail_after(10):  # the peer sees its connection end
            while sum(len(p.host.get_connected_peers()) for p in peers) > 1:
                await trio.sleep(_POLL_S)
