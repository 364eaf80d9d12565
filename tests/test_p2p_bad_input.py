"""A hostile peer (a raw gossipsub host with no validator) sends garbage, a bad signature, an
oversized message and a broken chain to A; A rejects each, stores and forwards none of them,
keeps running, and bans the peer past the threshold. Topology: attacker - A - B."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from libp2p.crypto.secp256k1 import create_new_key_pair

from events import kinds as k
from events.author import Author
from events.crypto import LocalKeySigner
from events.envelope import MAX_EVENT_BYTES, SignedEvent, sign_event
from p2p.config import P2PConfig
from p2p.gossip import encode_batch, events_topic
from p2p.host import RunningHost, running_host
from p2p.localnet import LOOPBACK, connect, open_local_nodes
from p2p.node import P2PNode
from p2p.peers import parse_peer_addr
from tests.conftest import key
from tests.polling import until

TOLERANT = P2PConfig(sync_interval_s=60.0, ban_threshold=100.0)


@asynccontextmanager
async def attacker_of(target: P2PNode) -> AsyncIterator[RunningHost]:
    """A host that publishes whatever bytes it is given on the target's topic."""
    config = dataclasses.replace(target.config, listen=(LOOPBACK,))
    topic = events_topic(config.network)
    async with running_host(create_new_key_pair(b"\x07" * 32), config, frozenset({topic})) as bad:
        await bad.pubsub.subscribe(topic)
        await bad.host.connect(parse_peer_addr(target.addrs[0]))
        await bad.pubsub.wait_for_subscription(target.running.host.get_id(), topic, timeout=10)
        await bad.pubsub.wait_for_mesh(target.running.host.get_id(), topic, timeout=10)
        yield bad


def offer(price: int) -> k.Offer:
    return k.Offer(price, 1, ("transcode:h264",), 2, "peer", ())


def with_bad_signature(event: SignedEvent) -> bytes:
    raw = bytearray(event.raw)
    raw[-40] ^= 0x01  # inside s: still canonical, no longer the author's signature
    return bytes(raw)


async def test_bad_input_is_rejected_not_stored_not_forwarded(tmp_path: Path) -> None:
    author = Author(LocalKeySigner(key(1)))
    first = author.sign(offer(1), 1)
    marker = author.sign(offer(2), 2)
    broken = sign_event(
        LocalKeySigner(key(1)), version=1, kind=k.Offer.KIND, seq=2, prev=bytes(32),
        time_ms=3, body=offer(3).to_wire(),
    )  # fmt: skip
    async with open_local_nodes(tmp_path, 2, TOLERANT) as (a, b):
        await connect([a, b], [(0, 1)])
        await a.publish(first)
        with trio.fail_after(10):
            await b.wait_until(lambda: b.event_count() == 1)
        async with attacker_of(a) as bad:
            topic = a.gossip.topic
            for payload in (
                b"\x00 not an event",
                encode_batch([with_bad_signature(author.sign(offer(9), 9))]),
                encode_batch([b"\x98" + b"x" * MAX_EVENT_BYTES]),
                encode_batch([broken.raw]),
            ):
                await bad.pubsub.publish(topic, payload)
                await trio.sleep(0)
            await bad.pubsub.publish(topic, encode_batch([marker.raw]))
            with trio.fail_after(10):  # A forwards before its own append is durable: both
                await b.wait_until(lambda: b.event_count() == 2)
                await a.wait_until(lambda: a.event_count() == 2)
            assert a.guard.rejected == 4
            assert b.guard.rejected == 0  # nothing invalid was forwarded to B
            for node in (a, b):
                ids = {e for e in _ids(node)}
                assert ids == {first.id, marker.id}
                assert node.store.conflicts() == []
            # A keeps running and gossiping
            await a.publish(Author(LocalKeySigner(key(2))).sign(offer(5), 5))
            with trio.fail_after(10):
                await b.wait_until(lambda: b.event_count() == 3)


async def test_peer_sending_invalid_messages_is_disconnected(tmp_path: Path) -> None:
    strict = dataclasses.replace(TOLERANT, ban_threshold=3.0)
    async with open_local_nodes(tmp_path, 1, strict) as (a,), attacker_of(a) as bad:
        for i in range(3):
            await bad.pubsub.publish(a.gossip.topic, b"garbage %d" % i)
            await trio.sleep(0)
        # libp2p marks a finished disconnect with no event
        await until(
            lambda: a.running.host.get_id() not in bad.host.get_connected_peers(),
            "the attacker is disconnected from A", timeout=10,
        )  # fmt: skip
        assert a.guard.banned == [bad.peer_id]
        assert a.event_count() == 0


def _ids(node: P2PNode) -> set[bytes]:
    from events.envelope import decode

    return {decode(raw).id for _, raw in node.store.read()}
