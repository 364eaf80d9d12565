"""A live store's audit says how complete it is against the heads its peers announced when they
synced: "complete up to the heads seen from N peers", or where it is behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from events import kinds as k
from events.author import Author
from events.crypto import LocalKeySigner
from node.cli.main import main
from p2p.config import P2PConfig
from p2p.localnet import connect, open_local_nodes
from storage.store import KEEP_PEERS, EventStore
from tests.conftest import key


def offers(author: Author, n: int) -> list:
    return [author.sign(k.Offer(i + 1, 1, ("transcode:h264",), 2, "p", ()), i) for i in range(n)]


def test_store_compares_itself_with_recorded_peer_heads(tmp_path: Path, capsys) -> None:
    a, b = Author(LocalKeySigner(key(21))), Author(LocalKeySigner(key(22)))
    mine, theirs = offers(a, 3), offers(b, 2)
    other = Author(LocalKeySigner(key(22))).sign(k.Offer(99, 1, ("x",), 2, "q", ()), 9)
    with EventStore.open_dir(tmp_path) as store:
        store.append(mine + theirs)
        store.record_peer_heads("peerA", {a.signer.address: (3, mine[2].id)}, 1)
        store.record_peer_heads("peerB", {a.signer.address: (5, b"\x01" * 32),
                                          b.signer.address: (1, other.id)}, 2)  # fmt: skip
        store.record_peer_heads("peerC", {}, 3)
        views = {v.peer: v for v in store.compare_peer_heads()}
        assert set(views) == {"peerA", "peerB", "peerC"}
        assert views["peerA"].complete and views["peerC"].complete
        assert views["peerB"].behind == [(a.signer.address, 5, 3)]
        assert views["peerB"].differs == [(b.signer.address, 1)]
        # a peer's newer announcement replaces its older one
        store.record_peer_heads("peerB", {a.signer.address: (3, mine[2].id)}, 4)
        assert all(v.complete for v in store.compare_peer_heads())
        for n in range(KEEP_PEERS + 5):  # only the peers seen last are kept
            store.record_peer_heads(f"p{n}", {a.signer.address: (1, mine[0].id)}, 10 + n)
        kept = {v.peer for v in store.compare_peer_heads()}
        assert len(kept) == KEEP_PEERS and "p0" not in kept and f"p{KEEP_PEERS + 4}" in kept
        store.record_peer_heads("lagging", {a.signer.address: (7, b"\x02" * 32)}, 10_000)
    code = main(["audit", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0  # behind a peer is not damage: a live store catches up by sync
    assert f"behind the heads seen from 1 of {KEEP_PEERS} peer(s)" in out
    assert "lagging: author 0x" in out and "seq 7, here 3" in out


async def test_audit_of_a_live_store_names_the_peers_it_is_complete_against(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = P2PConfig(sync_interval_s=60.0)
    author = Author(LocalKeySigner(key(23)))
    async with open_local_nodes(tmp_path, 2, config) as (a, b):
        await connect([a, b], [(0, 1)])
        for event in offers(author, 3):
            await a.publish(event)
        with trio.fail_after(10):
            await b.wait_until(lambda: b.event_count() == 3)
        # B asks A: A records B's heads before it answers DONE
        await b.sync.sync_from(a.running.host.get_id())

        code = await trio.to_thread.run_sync(main, ["audit", str(a.data_dir), "--json"])
        report = json.loads(capsys.readouterr().out)
        done = report["completeness"]
        assert code == 0 and done["source"] == "store"
        assert done["peers"] == 1 and done["complete_up_to_peers"] == 1  # B, the one peer
        assert done["behind"] == [] and done["differs"] == []
        code = await trio.to_thread.run_sync(main, ["audit", str(a.data_dir)])
        assert (
            code == 0 and "complete up to the heads seen from 1 peer(s)" in capsys.readouterr().out
        )
