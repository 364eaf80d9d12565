"""The gateway HTTP API on a real in-process service (gateway + orchestrator roles, real libp2p on
127.0.0.1, real encodes): token required when configured, JSON path jobs, output served with
traversal refused, and a clear JSON error for every bad request."""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
from api_client import request, request_json, upload, wait_job
from conftest import key

from node.config import build_config
from node.local.demo import generate_clip
from node.service import NodeService

TOKEN = "s3cret-token-for-tests-0123456789"
PROFILES = "180p:300k,144p"


@asynccontextmanager
async def service(tmp_path: Path, **api: Any) -> AsyncIterator[tuple[NodeService, str]]:
    raw = {
        "roles": ["gateway", "orchestrator"],
        "data_dir": "data",
        "p2p": {"network": "api-test"},
        "ledger": {"kind": "embedded"},  # what a single-process node runs on
        "gateway": {"profiles": PROFILES},
        "orchestrator": {"ticket_ev": "1e9", "redeem_interval_s": 0.5},
        "api": {"listen": "127.0.0.1:0", **api},
    }
    if "token" not in api:  # tests without a token say so (the default is a token in the data dir)
        raw["api"].setdefault("require_token", False)
    config = build_config(raw, tmp_path)
    keys = {"gateway": key(11), "orchestrator": key(12)}
    async with trio.open_nursery() as nursery:
        svc: NodeService = await nursery.start(NodeService(config, keys).run)
        assert svc.api_address is not None
        yield svc, "http://{}:{}".format(*svc.api_address)
        nursery.cancel_scope.cancel()


async def call(api: str, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    return await trio.to_thread.run_sync(lambda: request_json(api, method, path, **kw))


async def test_token_json_job_output_and_errors(tmp_path: Path) -> None:
    clip = generate_clip(tmp_path / "clip.mp4", "320x180", 4.0)
    roots = [str(tmp_path)]
    async with service(tmp_path, token=TOKEN, path_roots=roots) as (svc, api):
        # the token is required on every endpoint
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            status, body = await call(api, "GET", "/v1/jobs", headers=headers)
            assert status == 401 and body["error"] == "unauthorized"
        status, body = await call(api, "GET", "/v1/status", token=TOKEN)
        assert status == 200 and set(body["roles"]) == {"gateway", "orchestrator"}

        async def post_json(payload: bytes) -> tuple[int, Any]:
            return await call(api, "POST", "/v1/transcode", body=payload, token=TOKEN,
                              headers={"Content-Type": "application/json"})  # fmt: skip

        bad = [
            (b"{bad", 400, "bad_json"),
            (b"[1, 2]", 400, "bad_json"),
            (b'{"path": "x", "extra": 1}', 400, "bad_request"),
            (b'{"profiles": "360p"}', 400, "bad_request"),
            (b'{"path": "relative.mp4"}', 400, "bad_path"),
            (b'{"path": "/etc/hostname"}', 403, "forbidden"),
            (f'{{"path": "{tmp_path}/none.mp4"}}'.encode(), 403, "forbidden"),
            (f'{{"path": "{clip}", "profiles": "999x"}}'.encode(), 400, "bad_profiles"),
        ]
        for payload, code, error in bad:
            status, body = await post_json(payload)
            assert (status, body["error"]) == (code, error), (payload, body)
            assert body["message"]
        status, job = await post_json(f'{{"path": "{clip}", "profiles": "144p"}}'.encode())
        assert status == 202
        record = await wait_job(api, job["id"], 60, token=TOKEN)
        assert record["status"] == "done" and record["profiles"] == "144p", record
        assert record["progress"] == {"segments_total": 2, "segments_done": 2,
                                      "segments_failed": 0, "fraction": 1.0}  # fmt: skip
        jid = job["id"]
        status, master = await trio.to_thread.run_sync(
            lambda: request(api, "GET", f"/v1/jobs/{jid}/master.m3u8", token=TOKEN)
        )
        assert status == 200 and b"144p/index.m3u8" in master and b"180p" not in master
        for path, code, error in [
            (f"/v1/jobs/{jid}/../../../etc/passwd", 400, "bad_path"),
            (f"/v1/jobs/{jid}/%2e%2e/job.json", 400, "bad_path"),
            (f"/v1/jobs/{jid}/144p%2F..%2F..%2Fjob.json", 400, "bad_path"),
            (f"/v1/jobs/{jid}/144p//index.m3u8", 400, "bad_path"),
            (f"/v1/jobs/{jid}/nothing.ts", 404, "not_found"),
            ("/v1/jobs/0123456789abcdef0123456789abcdef", 404, "unknown_job"),
            ("/v1/jobs/..%2F..%2Fdata", 404, "unknown_job"),
            ("/v1/nowhere", 404, "not_found"),
            ("/elsewhere", 404, "not_found"),
        ]:
            status, body = await trio.to_thread.run_sync(lambda p=path: _raw_get(api, p))
            assert (status, body["error"]) == (code, error), (path, body)
        status, body = await call(api, "POST", "/v1/ai/colorize", body=b"{}", token=TOKEN,
                                  headers={"Content-Type": "application/json"})  # fmt: skip
        assert (
            status == 404 and body["error"] == "unknown_pipeline" and "colorize" in body["message"]
        )
        status, body = await call(api, "DELETE", f"/v1/jobs/{jid}", token=TOKEN)
        assert status == 405 and body["error"] == "method_not_allowed"
        status, body = await call(api, "GET", "/v1/transcode", token=TOKEN)
        assert status == 405
    assert svc.orchestrator is not None and svc.orchestrator.stats.jobs == 2


def _raw_get(api: str, path: str) -> tuple[int, Any]:
    """GET without any client-side path normalisation."""
    url = urlsplit(api)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {TOKEN}")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


async def test_uploads_limits_and_media_types(tmp_path: Path) -> None:
    clip = generate_clip(tmp_path / "clip.mp4", "320x180", 2.0)
    data = clip.read_bytes()
    async with service(tmp_path, max_upload_bytes=len(data)) as (_svc, api):
        # refused on its Content-Length, before the body is read
        status, body = await trio.to_thread.run_sync(_announce_upload, api, len(data) + 1)
        assert status == 413 and body["error"] == "too_large"
        for headers, code, error in [
            ({"Content-Type": "multipart/form-data; boundary=x"}, 415, "unsupported_media_type"),
            ({"Content-Type": "video/mp4", "Content-Length": "0"}, 400, "bad_request"),
        ]:
            status, body = await call(api, "POST", "/v1/transcode", body=b"", headers=headers)
            assert (status, body["error"]) == (code, error)
        status, body = await trio.to_thread.run_sync(_chunked_post, api)
        assert status == 411 and body["error"] == "length_required"
        status, body = await call(api, "POST", "/v1/transcode?profiles=7p", body=data,
                                  headers={"Content-Type": "video/mp4"})  # fmt: skip
        assert status == 400 and body["error"] == "bad_profiles"
        garbage = await trio.to_thread.run_sync(lambda: upload(api, b"not a video" * 100))
        job = await trio.to_thread.run_sync(lambda: upload(api, data, profiles="144p"))
        failed = await wait_job(api, garbage["id"], 30)
        assert failed["status"] == "failed" and failed["error"]
        record = await wait_job(api, job["id"], 60)
        assert record["status"] == "done" and record["source"] == "upload", record
        status, listing = await call(api, "GET", "/v1/jobs")
        assert [j["id"] for j in listing["jobs"]] == [garbage["id"], job["id"]]


def _announce_upload(api: str, length: int) -> tuple[int, Any]:
    """Send only the headers of an upload and read the answer."""
    url = urlsplit(api)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.putrequest("POST", "/v1/transcode")
        conn.putheader("Content-Type", "video/mp4")
        conn.putheader("Content-Length", str(length))
        conn.endheaders()
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _chunked_post(api: str) -> tuple[int, Any]:
    url = urlsplit(api)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.putrequest("POST", "/v1/transcode")
        conn.putheader("Content-Type", "video/mp4")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        # the server may answer 411 and close before it reads the body
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.send(b"3\r\nabc\r\n0\r\n\r\n")
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_an_rpc_ledger_needs_a_deployment_and_a_reachable_chain(tmp_path: Path) -> None:
    from node.config import ConfigError
    from node.service import ServiceError, make_ledger

    rpc = {"kind": "rpc", "rpc_url": "http://127.0.0.1:9"}  # discard port: nothing answers
    with pytest.raises(ConfigError, match=r"ledger\.contracts"):
        build_config({"roles": ["gateway"], "data_dir": "d", "ledger": rpc}, tmp_path)
    (tmp_path / "contracts.json").write_text('{"contracts": {}}')
    config = build_config({"roles": ["gateway"], "data_dir": "d",
                           "ledger": {**rpc, "contracts": "contracts.json"}}, tmp_path)  # fmt: skip
    with pytest.raises(ServiceError, match="cannot reach the chain"):
        make_ledger(config, {"gateway": b"\x01" * 32})
