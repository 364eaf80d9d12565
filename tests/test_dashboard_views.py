"""The dashboard's routes over HTTP on a running node (gateway + orchestrator, real libp2p on
127.0.0.1): the page with its security headers, its static files (no way out of the folder), and
the read-only JSON views — what they show, and a JSON error for every bad request."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from conftest import key

from events import kinds as k
from events.author import Author
from node.api.ops import build_ops_app, node_routes, serve_app
from node.api.views import Digest
from node.config import build_config
from node.service import NodeService


@asynccontextmanager
async def site(tmp_path: Path) -> AsyncIterator[tuple[NodeService, tuple[str, int]]]:
    raw = {"roles": ["gateway", "orchestrator"], "data_dir": "data",
           "p2p": {"network": "views-test"}, "ledger": {"kind": "embedded"},
           "api": {"enabled": False}}  # fmt: skip
    config = build_config(raw, tmp_path)
    async with trio.open_nursery() as nursery:
        svc: NodeService = await nursery.start(
            NodeService(config, {"gateway": key(41), "orchestrator": key(42)}).run
        )
        address = await nursery.start(serve_app, build_ops_app(node_routes(svc)), "127.0.0.1", 0)
        yield svc, address
        nursery.cancel_scope.cancel()


def get(
    address: tuple[str, int], path: str, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(*address, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


async def fetch(address: tuple[str, int], path: str, method: str = "GET") -> tuple[int, Any]:
    status, headers, body = await trio.to_thread.run_sync(get, address, path, method)
    assert headers.get("content-type", "").startswith("application/json"), (path, headers)
    return status, json.loads(body)


async def test_page_static_files_and_views(tmp_path: Path) -> None:
    async with site(tmp_path) as (svc, address):
        status, headers, body = await trio.to_thread.run_sync(get, address, "/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        # every script, style and icon comes from the node itself (never a CDN)
        links = re.findall(rb'(?:src|href)="([^"]*)"', body)
        assert b"/static/app.js" in links and b"/static/vendor/hls.min.js" in links
        assert all(link.startswith((b"/static/", b"data:")) for link in links), links
        status, headers, _ = await trio.to_thread.run_sync(get, address, "/static/app.js")
        assert status == 200 and "javascript" in headers["content-type"]
        for path in ("/static/../dashboard.py", "/static/%2e%2e/dashboard.py", "/static/nothing"):
            status, _, body = await trio.to_thread.run_sync(get, address, path)
            assert status == 404 and b"Content-Security" not in body, path

        orch = svc.members["orchestrator"].signer.address
        with trio.fail_after(20):  # the orchestrator's offer reaches the gateway's log
            while True:
                status, network = await fetch(address, "/v1/network")
                assert status == 200
                if network["orchestrators"]:
                    break
                await svc.members["gateway"].node.ingest.wait_changed()
        (offer,) = network["orchestrators"]
        assert offer["address"] == "0x" + orch.hex() and "transcode:h264" in offer["capabilities"]
        # the gateway admits by standing (the default): the orchestrator's logged self-bond is it
        assert svc.members["gateway"].node.admission is not None
        # the stake it bonded to itself on the embedded chain, as its own log observed it
        stake = await trio.to_thread.run_sync(svc.ledger.stake, orch)
        assert stake > 0 and offer["stake"] == str(stake) and offer["stake_text"].endswith(" CAST")
        assert offer["reputation"] == {"verified": 0, "failed": 0, "mean_latency_ms": None,
                                       "equivocations": 0}  # fmt: skip
        assert network["peers"] == {"gateway": 1, "orchestrator": 1}

        status, log = await fetch(address, "/v1/log?kind=Offer")
        assert status == 200 and log["events"] and {e["kind"] for e in log["events"]} == {"Offer"}
        author = "0x" + orch.hex()
        assert author in log["authors"] and "Offer" in log["kinds"]
        status, mine = await fetch(address, f"/v1/log?author={author}&limit=1")
        assert status == 200 and len(mine["events"]) == 1 and mine["events"][0]["author"] == author

        status, audit = await fetch(address, "/v1/audit")
        assert status == 200 and audit["clean"] and audit["intact"]
        assert audit["problems"] == [] and audit["evidence"] == []
        assert audit["events"] >= log["total"] >= 1

        status, stake = await fetch(address, "/v1/stake")
        assert status == 200 and stake["total_stake_text"] == offer["stake_text"]
        assert stake["rounds"] == []

        for path, code, error in [
            ("/v1/log?limit=0", 400, "bad_request"),
            ("/v1/log?limit=abc", 400, "bad_request"),
            ("/v1/log?limit=501", 400, "bad_request"),
            ("/v1/log?kind=" + "x" * 100, 400, "bad_request"),
            ("/v1/segments/0123456789abcdef0123456789abcdef", 404, "unknown_job"),
            ("/v1/segments/" + "a" * 300, 404, "unknown_job"),
            ("/v1/nowhere", 404, "not_found"),
        ]:
            status, body = await fetch(address, path)
            assert (status, body["error"]) == (code, error), (path, body)
            assert body["message"]
        for method in ("POST", "DELETE", "PUT"):
            status, body = await fetch(address, "/v1/network", method)
            assert (status, body["error"]) == (405, "method_not_allowed")
        status, headers, body = await trio.to_thread.run_sync(get, address, "/v1/stake", "HEAD")
        assert status == 200 and body == b""
        status, headers, body = await trio.to_thread.run_sync(get, address, "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain")
        assert b'castnet_log_events{role="gateway"}' in body


def test_digest_rewards_fees_and_unbonds_by_round(authors: list[Author]) -> None:
    """What the Stake page charts: stake minted and fees redeemed in the round they happened."""
    watcher, orch, delegator = authors[0], authors[1].address, authors[2].address
    at = (1, b"\x01" * 32, b"\x02" * 32, 0)
    bodies = [
        k.ChainObserved("round", *at, (1,)),
        k.ChainObserved("reward", *at, (orch, 100)),
        k.ChainObserved("round", *at, (2,)),
        k.ChainObserved("reward", *at, (orch, 50)),
        k.ChainObserved("unbond", *at, (delegator, orch, 7 * 10**18)),
    ]
    digest = Digest()
    for position, body in enumerate(bodies, start=1):
        digest.add(position, watcher.sign(body, 1000 + position))
    redeemed = k.TicketRedeemed(b"\x03" * 32, delegator, 2 * 10**18, b"\x04" * 32, 9)
    digest.add(6, authors[1].sign(redeemed, 2000))
    assert digest.rewards == {1: 100, 2: 50} and digest.fees == {2: 2 * 10**18}
    assert digest.last_reward == {orch: 2}
    (unbond,) = digest.unbonds
    assert unbond["amount_text"] == "7 CAST" and unbond["round"] == 2
    assert unbond["delegator"] == "0x" + delegator.hex()
    assert [e["kind"] for e in digest.recent][-2:] == ["ChainObserved", "TicketRedeemed"]
