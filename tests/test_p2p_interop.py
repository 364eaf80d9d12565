"""A stock js-libp2p peer (tests/interop, gossipsub defaults: StrictSign) and castnet nodes,
`castnet node start` among them, on one line: P -> J <- A <- Q (arrows: who dials). Events of
each kind of author travel both ways through the JS peer and through the castnet process.

Needs Node.js and `make interop-deps` (skipped without them)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from events import kinds as k
from events.author import Author
from events.crypto import LocalKeySigner, keccak256
from events.envelope import SignedEvent
from p2p.config import P2PConfig
from p2p.gossip import decode_batch, encode_batch, events_topic
from p2p.localnet import LOOPBACK
from p2p.node import P2PNode, open_node
from tests.conftest import key
from tests.test_p2p_process import count, node_process

ROOT = Path(__file__).resolve().parents[1]
INTEROP = ROOT / "tests" / "interop"
NODE = shutil.which("node")
CONFIG = P2PConfig(listen=(LOOPBACK,), sync_interval_s=60.0)
TOPIC = events_topic(CONFIG.network)
_MESH_POLL_S = 0.02  # gossipsub exposes no "mesh changed" event

pytestmark = pytest.mark.skipif(
    NODE is None or not (INTEROP / "node_modules").is_dir(),
    reason="the JS interop peer needs Node.js and `make interop-deps`",
)


class JsPeer:
    """tests/interop/peer.mjs in its own process, driven by JSON lines."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.reports: list[dict[str, Any]] = []
        self._changed = trio.Event()

    async def read(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        while True:
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self.reports.append(json.loads(line))
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], start: int = 0
    ) -> dict[str, Any]:
        """The first report from index `start` on that satisfies `predicate` (bound it)."""
        while True:
            for report in self.reports[start:]:
                assert "error" not in report, report
                if predicate(report):
                    return report
            await self._changed.wait()

    async def mesh(self) -> set[str]:
        start = len(self.reports)
        await self.send(cmd="mesh")
        return set((await self.wait_for(lambda r: "mesh" in r, start))["mesh"])

    async def wait_received(self, ids: set[bytes]) -> None:
        while not ids <= {e.id for e in self.received()}:
            await self._changed.wait()

    async def send(self, **command: Any) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(json.dumps(command).encode() + b"\n")

    def received(self) -> list[SignedEvent]:
        return [
            e
            for r in self.reports
            if "received" in r
            for e in decode_batch(bytes.fromhex(r["received"]))
        ]


@asynccontextmanager
async def js_peer() -> AsyncIterator[tuple[JsPeer, dict[str, Any]]]:
    assert NODE is not None
    process = await trio.lowlevel.open_process(
        [NODE, "peer.mjs", TOPIC], cwd=INTEROP,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    peer = JsPeer(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.read)
            with trio.fail_after(30):
                ready = await peer.wait_for(lambda r: r.get("ready", False))
            yield peer, ready
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()  # this test's own process, by its handle
            await process.wait()


async def wait_meshed(node: P2PNode, peer_id: str) -> None:
    with trio.fail_after(15):
        while peer_id not in {p.to_base58() for p in node.running.router.mesh.get(TOPIC, ())}:
            await trio.sleep(_MESH_POLL_S)


def deposit(author: Author, block: int) -> SignedEvent:
    """A gateway's own deposit, as its node logs it: stored by a node that admits by standing
    (the default of `castnet node start`) without any standing before it."""
    body = k.ChainObserved(
        "deposit", block, keccak256(b"block"), keccak256(b"tx"), 0, (author.address, 10**18)
    )
    return author.sign(body, 1000 + block)


async def wait_stored(node: P2PNode, event: SignedEvent) -> None:
    with trio.fail_after(20):
        await node.wait_until(lambda: node.ingest.heads.get(event.author, 0) >= event.seq)


async def wait_process_count(data_dir: Path, n: int) -> None:
    with trio.fail_after(20):
        while count(data_dir) < n:
            await trio.sleep(_MESH_POLL_S)  # another process's store offers no event to wait on


async def test_js_peer_and_castnet_exchange_events_whichever_side_dials(tmp_path: Path) -> None:
    authors = [Author(LocalKeySigner(key(40 + i))) for i in range(3)]
    from_p, from_js, from_q = (deposit(a, 10 + i) for i, a in enumerate(authors))
    a_dir = tmp_path / "a"
    async with js_peer() as (js, ready), node_process(a_dir) as a:
        await js.send(cmd="dial", addr=a.addr)  # the JS peer dials castnet
        with trio.fail_after(15):
            await js.wait_for(lambda r: "dialed" in r)
        js_addr = ready["addrs"][0]
        # castnet dials the JS peer; Q dials the castnet process
        p_config = dataclasses.replace(CONFIG, bootstrap=(js_addr,))
        q_config = dataclasses.replace(CONFIG, bootstrap=(a.addr,))
        async with (
            open_node(tmp_path / "p", p_config) as p,
            open_node(tmp_path / "q", q_config) as q,
        ):
            a_id = a.addr.rsplit("/", 1)[1]
            await wait_meshed(p, ready["peer_id"])
            await wait_meshed(q, a_id)
            with trio.fail_after(15):  # the JS peer's mesh holds P and A (and so theirs hold it)
                while not {a_id, p.peer_id} <= await js.mesh():
                    await trio.sleep(_MESH_POLL_S)

            # castnet -> JS: P's event reaches the JS peer, which forwards it to A, then to Q
            await p.publish(from_p)
            with trio.fail_after(15):
                await js.wait_received({from_p.id})
            await wait_stored(q, from_p)

            # JS -> castnet: an event the JS peer publishes (signed by its libp2p key) is stored
            # by P (dialled by castnet) and by A (which dialled), and A forwards it to Q
            await js.send(cmd="publish", data=encode_batch([from_js.raw]).hex())
            with trio.fail_after(15):
                sent = await js.wait_for(lambda r: "published" in r)
            assert sent["recipients"] >= 2
            await wait_stored(p, from_js)
            await wait_stored(q, from_js)

            # castnet process -> JS: Q's event is forwarded by A to the JS peer and on to P
            await q.publish(from_q)
            await wait_stored(p, from_q)
            with trio.fail_after(15):
                await js.wait_received({from_q.id})
            assert sorted(e.id for e in js.received()) == sorted([from_p.id, from_q.id])
            await wait_process_count(a_dir, 3)
            assert p.guard.rejected == q.guard.rejected == 0
            assert js.process.returncode is None
