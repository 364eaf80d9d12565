"""A sync peer that serves a forged event is scored down and dropped, as a gossip peer would be.
The bad peer is a real libp2p host on 127.0.0.1 that answers `/castnet/sync/1` by hand."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import trio
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.network.stream.net_stream import INetStream

from events import kinds as k
from events.author import Author
from events.crypto import LocalKeySigner
from p2p.config import P2PConfig
from p2p.framing import MessageStream
from p2p.host import running_host
from p2p.localnet import LOOPBACK, open_local_nodes
from p2p.peers import DISCONNECTED, PeerEvents, parse_peer_addr
from p2p.sync import DONE, EVENTS, HELLO, SYNC_PROTOCOL
from tests.conftest import key

STRICT = P2PConfig(sync_interval_s=60.0, ban_threshold=1.0)


def forged(raw: bytes) -> bytes:
    out = bytearray(raw)
    out[-40] ^= 0x01  # inside s: still canonical, no longer the author's signature
    return bytes(out)


async def test_sync_peer_serving_a_bad_signature_is_banned(tmp_path: Path) -> None:
    author = Author(LocalKeySigner(key(4)))
    good = author.sign(k.Offer(7, 1, ("transcode:h264",), 2, "peer", ()), 1)
    bad_raw = forged(good.raw)
    served = trio.Event()

    async with open_local_nodes(tmp_path, 1, STRICT) as (a,):
        config = dataclasses.replace(a.config, listen=(LOOPBACK,))

        async def serve_forgery(stream: INetStream) -> None:
            ms = MessageStream(stream, config.max_frame_bytes, config.frame_timeout_s)
            await ms.expect(HELLO, 4)
            await ms.send([EVENTS, [bad_raw]])
            await ms.send([DONE, 1])
            served.set()

        def wire(running) -> None:
            running.host.set_stream_handler(SYNC_PROTOCOL, serve_forgery)

        async with running_host(
            create_new_key_pair(b"\x09" * 32), config, frozenset(), wire
        ) as bad:
            send, receive = trio.open_memory_channel[tuple[str, object]](16)
            bad.host.get_network().register_notifee(PeerEvents(send))
            await bad.host.connect(parse_peer_addr(a.addrs[0]))  # A syncs from a new peer
            with trio.fail_after(20):
                await served.wait()
                async for what, peer in receive:
                    if what == DISCONNECTED and peer == a.running.host.get_id():
                        break
            assert a.guard.banned == [bad.peer_id]
            assert a.guard.rejected == 1
            assert a.event_count() == 0 and a.store.count() == 0
            assert a.guard.is_banned(bad.host.get_id())
