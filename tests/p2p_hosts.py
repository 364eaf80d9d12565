"""Real libp2p hosts on 127.0.0.1 for the transport tests: several started together, and a stream
opened from one to another."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.stream.net_stream import INetStream
from libp2p.peer.peerinfo import PeerInfo

from p2p.config import P2PConfig
from p2p.host import RunningHost, running_host
from p2p.localnet import LOOPBACK


@contextlib.asynccontextmanager
async def loopback_hosts(
    *seeds: int, topics: frozenset[str] = frozenset()
) -> AsyncIterator[list[RunningHost]]:
    """One running host per seed (its key made from the seed byte), closed in reverse order."""
    config = P2PConfig(listen=(LOOPBACK,))
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                running_host(create_new_key_pair(bytes([seed]) * 32), config, topics)
            )
            for seed in seeds
        ]


async def open_stream(dialer: RunningHost, to: RunningHost, protocol: TProtocol) -> INetStream:
    """Connect `dialer` to `to` and open a stream for `protocol` on it."""
    await dialer.host.connect(PeerInfo(to.host.get_id(), to.host.get_addrs()))
    return await dialer.host.new_stream(to.host.get_id(), [protocol])
