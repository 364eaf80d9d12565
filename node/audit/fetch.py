"""Fetch a party's log from it, for an audit: its network-wide events by a default sync, then
its job chains (and its counterparties' chains towards it) by an author-limited sync. Job chains
are not flooded, so a node that was not a party to a job holds none of them; the parties do."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import trio
from libp2p.peer.id import ID

from p2p.config import P2PConfig
from p2p.errors import P2PError
from p2p.localnet import LOOPBACK
from p2p.node import P2PNode, open_node


@dataclass(frozen=True, slots=True)
class Fetched:
    peer: str
    network_events: int  # received by the default sync
    job_events: int  # received by the author-limited sync
    job_chains: int  # job chains now held that speak for or towards the parties


async def fetch_from(node: P2PNode, peer: ID, parties: list[bytes], timeout_s: float) -> Fetched:
    """Into a started `node`: raises P2PError (or trio.TooSlowError) when the peer does not
    answer, so an audit never passes on a log it could not fetch."""
    with trio.fail_after(timeout_s):
        network = await node.sync.sync_from(peer)
        jobs = await node.sync.sync_from(peer, parties)
    chains = len(node.jobs.involving(set(parties)))
    return Fetched(peer.to_base58(), network, jobs, chains)


async def fetch_party_log(
    dest: str | Path,
    peer_addr: str,
    parties: list[bytes],
    config: P2PConfig,
    timeout_s: float = 120.0,
) -> Fetched:
    """Start a node on `dest` (a data dir, created if new), fetch from the peer at `peer_addr`
    (a multiaddr with /p2p/<id>) what it holds of `parties`, and stop."""
    quiet = dataclasses.replace(
        config, listen=(LOOPBACK,), bootstrap=(), mdns=False, peers_target=0
    )
    async with open_node(dest, quiet) as node:
        try:
            peer = ID.from_base58(await node.connect(peer_addr))
        except Exception as exc:  # unreachable, refused, wrong peer id: say which
            raise P2PError(f"cannot reach {peer_addr}: {exc!r}") from None
        return await fetch_from(node, peer, parties, timeout_s)
