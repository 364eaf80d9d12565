"""What the HTTP API accepts from whom, and that strangers cannot stall it, on a real in-process
service (gateway + orchestrator on 127.0.0.1): idle and slow connections, the per-client bound,
header and body timeouts, the Host/token/content-type rules, path roots, live URL rules, and a
JSON error without internals for every malformed request."""

from __future__ import annotations

import json
import logging
import socket
import stat
import struct
from pathlib import Path
from typing import Any

import pytest
import trio
from api_client import wait_job
from polling import until, until_in_thread
from test_node_api import TOKEN, service

from node.local.demo import generate_clip

AUTH = f"Authorization: Bearer {TOKEN}\r\n"


async def raw(api: str, data: bytes, *, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send `data` as it is on a new connection; (status, headers, body) of the answer."""
    stream = await _connect(api)
    async with stream:
        await stream.send_all(data)
        return await _read_answer(stream, timeout)


async def _connect(api: str) -> trio.SocketStream:
    host, port = api.removeprefix("http://").rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


async def _read_answer(
    stream: trio.abc.Stream, timeout: float
) -> tuple[int, dict[str, str], bytes]:
    buffer = b""
    with trio.fail_after(timeout):
        while b"\r\n\r\n" not in buffer:
            chunk = await stream.receive_some(65536)
            assert chunk, f"connection closed after {buffer!r}"
            buffer += chunk
        head, _, body = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = await stream.receive_some(65536)
            assert chunk, "connection closed mid-body"
            body += chunk
    return int(lines[0].split()[1]), headers, body


def host_of(api: str) -> str:
    return api.removeprefix("http://")


def get(api: str, path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host_of(api)}\r\n{extra}\r\n".encode()


def post(api: str, path: str, body: bytes, content_type: str, extra: str = AUTH) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host_of(api)}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body  # fmt: skip


async def timed_status(api: str) -> float:
    """Seconds an authorized `GET /v1/status` takes; it must answer 200."""
    started = trio.current_time()
    status, _, body = await raw(api, get(api, "/v1/status", AUTH + "Connection: close\r\n"))
    assert status == 200 and "gateway" in json.loads(body)["roles"], body
    return trio.current_time() - started


def assert_json_error(status: int, body: bytes, code: int, error: str, tmp_path: Path) -> None:
    answer = json.loads(body)
    assert (status, answer["error"]) == (code, error), answer
    assert set(answer) == {"error", "message"} and answer["message"]
    text = body.decode()
    assert str(tmp_path) not in text and "Traceback" not in text and "Error(" not in text


async def test_idle_connections_do_not_delay_an_authorized_request(tmp_path: Path) -> None:
    async with service(tmp_path, token=TOKEN) as (_svc, api):
        idle = [await _connect(api) for _ in range(100)]
        half = [await _connect(api) for _ in range(20)]
        for stream in half:  # a request head that never ends
            await stream.send_all(f"GET /v1/status HTTP/1.1\r\nHost: {host_of(api)}\r\n".encode())
        try:
            assert await timed_status(api) < 1.0
            assert await timed_status(api) < 1.0
        finally:
            for stream in idle + half:
                await stream.aclose()


async def test_slow_uploads_do_not_delay_status_and_leave_no_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with service(tmp_path, token=TOKEN, max_client_connections=100) as (_svc, api):
        uploads = []
        for _ in range(70):
            stream = await _connect(api)
            head = post(api, "/v1/transcode", b"", "video/mp4")
            head = head.replace(b"Content-Length: 0", b"Content-Length: 1000000")
            await stream.send_all(head + b"\x00" * 100)
            uploads.append(stream)
        assert await timed_status(api) < 1.0
        for stream in uploads:  # the clients go away mid-upload
            await stream.aclose()
        jobs = tmp_path / "data" / "gateway" / "jobs"
        # each interrupted upload's folder is removed (the server marks it with no event)
        await until_in_thread(
            lambda: not any(p.is_dir() for p in jobs.iterdir()),
            f"the interrupted uploads' job folders under {jobs} are removed", timeout=10,
        )  # fmt: skip
        assert await timed_status(api) < 1.0
        _status, listing = await _json(api, "/v1/jobs")
        assert listing == {"jobs": []}
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    assert "Traceback" not in caplog.text and "BrokenPipe" not in caplog.text


async def _json(api: str, path: str) -> tuple[int, Any]:
    status, _, body = await raw(api, get(api, path, AUTH))
    return status, json.loads(body)


async def test_connection_bound_and_timeouts(tmp_path: Path) -> None:
    options = dict(header_timeout_s=0.5, body_timeout_s=0.5)
    async with service(tmp_path / "a", token=TOKEN, **options) as (_svc, api):
        # a request head not finished in time: the connection is closed
        stream = await _connect(api)
        async with stream:
            await stream.send_all(b"GET /v1/status HTTP/1.1\r\n")
            with trio.fail_after(5):
                while await stream.receive_some(1024):
                    pass
        # a body that stops arriving: 408 as JSON
        stream = await _connect(api)
        async with stream:
            head = post(api, "/v1/transcode", b"", "video/mp4")
            await stream.send_all(head.replace(b"Content-Length: 0", b"Content-Length: 50") + b"x")
            status, _, body = await _read_answer(stream, 5)
            assert_json_error(status, body, 408, "timeout", tmp_path)
    # three requests in progress from this address: a fourth connection is refused
    async with service(tmp_path / "b", token=TOKEN, max_client_connections=3) as (_svc, api):
        busy = []
        upload_head = post(
            api, "/v1/transcode", b"", "video/mp4", AUTH + "Expect: 100-continue\r\n"
        )
        upload_head = upload_head.replace(b"Content-Length: 0", b"Content-Length: 1000000")
        for _ in range(3):
            stream = await _connect(api)
            await stream.send_all(upload_head)
            status, _, _ = await _read_answer(stream, 5)  # "100 Continue": the request is in
            assert status == 100
            busy.append(stream)
        try:
            status, _, body = await raw(api, get(api, "/v1/status", AUTH))
            assert_json_error(status, body, 503, "too_many_connections", tmp_path)
        finally:
            for stream in busy:
                await stream.aclose()

        async def answers_ok() -> bool:
            return (await raw(api, get(api, "/v1/status", AUTH)))[0] == 200

        await until(answers_ok, "the closed uploads' connection slots come back", timeout=5)


async def test_host_token_and_content_type_rules(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clip = generate_clip(tmp_path / "clip.mp4", "320x180", 4.0)
    async with service(tmp_path, token=TOKEN, path_roots=[str(tmp_path)]) as (_svc, api):
        port = api.rsplit(":", 1)[1]
        job = json.dumps({"path": str(clip)}).encode()
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1:1", f"127.0.0.1.:{port}x"):
            data = post(api, "/v1/transcode", job, "application/json").replace(
                f"Host: {host_of(api)}".encode(), f"Host: {host}".encode()
            )
            status, _, body = await raw(api, data)
            assert_json_error(status, body, 403, "forbidden_host", tmp_path)
        no_host = f"GET /v1/status HTTP/1.0\r\n{AUTH}\r\n".encode()
        status, _, body = await raw(api, no_host)
        assert_json_error(status, body, 403, "forbidden_host", tmp_path)
        for host in (f"localhost:{port}", f"[::1]:{port}", f"LOCALHOST:{port}"):
            data = get(api, "/v1/status", AUTH).replace(
                f"Host: {host_of(api)}".encode(), f"Host: {host}".encode()
            )
            assert (await raw(api, data))[0] == 200, host
        # a page's simple cross-site request: text/plain, form types, no type
        for kind in ("text/plain", "application/x-www-form-urlencoded", "text/plain; x=json"):
            status, _, body = await raw(api, post(api, "/v1/transcode", job, kind))
            assert_json_error(status, body, 415, "unsupported_media_type", tmp_path)
        status, _, body = await raw(api, post(api, "/v1/transcode", job, "application/json", ""))
        assert_json_error(status, body, 401, "unauthorized", tmp_path)
        status, _, body = await raw(api, get(api, "/v1/jobs"))
        assert_json_error(status, body, 401, "unauthorized", tmp_path)
        # the dashboard's page and files load without the token; its data and /metrics do not
        for path in ("/", "/static/app.js", "/static/style.css"):
            assert (await raw(api, get(api, path)))[0] == 200, path
        for path in ("/metrics", "/v1/network", "/v1/log", "/static/%2e%2e/views.py"):
            status, _, body = await raw(api, get(api, path))
            assert_json_error(status, body, 401, "unauthorized", tmp_path)
        status, _, body = await raw(api, post(api, "/", b"{}", "application/json", ""))
        assert_json_error(status, body, 401, "unauthorized", tmp_path)
        status, _, body = await raw(api, post(api, "/v1/transcode", job, "application/json"))
        assert status == 202, body
        job_id = json.loads(body)["id"]
        assert (await _json(api, "/v1/jobs"))[1]["jobs"][0]["id"] == job_id
        # clients that go away in the middle of a download leave no traceback
        record = await wait_job(api, job_id, 60, token=TOKEN)
        assert record["status"] == "done", record
        segment = f"/v1/jobs/{job_id}/144p/seg_00000.ts"
        for _ in range(20):
            stream = await _connect(api)
            await stream.send_all(get(api, segment, AUTH))
            assert (await stream.receive_some(12)).startswith(b"HTTP/1.1 200")
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()  # a reset, not a clean close
        assert (await raw(api, get(api, segment, AUTH)))[0] == 200
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    assert "Traceback" not in caplog.text


async def test_a_token_is_made_on_first_start_and_kept(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    async with service(tmp_path, require_token=True) as (svc, api):
        path = tmp_path / "data" / "gateway" / "api-token"
        token = path.read_text().strip()
        assert svc.api_token == token and len(token) >= 32 and svc.api_token_created
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert (await raw(api, get(api, "/v1/status")))[0] == 401
        auth = f"Authorization: Bearer {token}\r\n"
        assert (await raw(api, get(api, "/v1/status", auth)))[0] == 200
    async with service(tmp_path, require_token=True) as (svc, api):
        assert svc.api_token == token and not svc.api_token_created


async def test_malformed_requests_get_json_errors(tmp_path: Path) -> None:
    async with service(tmp_path, token=TOKEN, path_roots=[str(tmp_path)]) as (_svc, api):
        h = host_of(api)
        cases = [
            (f"POST /v1/transcode HTTP/1.1\r\nHost: {h}\r\n{AUTH}Content-Type: video/mp4\r\n"
             "Content-Length: \u00b2\r\n\r\n".encode(), 400, "bad_request"),
            (f"GET /v1/status HTTP/1.1\r\nHost: {h}\r\nBad Header\r\n\r\n".encode(), 400,
             "bad_request"),
            (b"NONSENSE\r\n\r\n", 400, "bad_request"),
            (f"GET /v1/status HTTP/1.1\r\nHost: {h}\r\nX: {'a' * 20000}\r\n\r\n".encode(), 431,
             "headers_too_large"),
            (post(api, "/v1/transcode", b'{"path": "/a\\u0000b"}', "application/json"), 400,
             "bad_path"),
            (post(api, "/v1/transcode", b'{"path": "/x", "profiles": ' + b"9" * 5000 + b"}",
                  "application/json"), 400, "bad_json"),
            (post(api, "/v1/transcode", b"\xff\xfe", "application/json"), 400, "bad_json"),
            (f"OPTIONS /v1/transcode HTTP/1.1\r\nHost: {h}\r\n{AUTH}\r\n".encode(), 405,
             "method_not_allowed"),
            (f"TRACE /v1/status HTTP/1.1\r\nHost: {h}\r\n{AUTH}\r\n".encode(), 405,
             "method_not_allowed"),
            (f"PUT /v1/jobs HTTP/1.1\r\nHost: {h}\r\n{AUTH}Content-Type: application/json\r\n"
             "Content-Length: 0\r\n\r\n".encode(), 405, "method_not_allowed"),
            (get(api, "/v1/jobs/0123456789abcdef0123456789abcdef/%00", AUTH), 404, "unknown_job"),
            (get(api, "/nowhere", AUTH), 404, "not_found"),
        ]  # fmt: skip
        for data, code, error in cases:
            status, headers, body = await raw(api, data)
            assert headers["content-type"] == "application/json", data[:80]
            assert_json_error(status, body, code, error, tmp_path)
        # a JSON body of thousands of nested arrays within the size limit
        deep = b'{"path": ' + b"[" * 30000 + b"]" * 30000 + b"}"
        status, _, body = await raw(api, post(api, "/v1/transcode", deep, "application/json"))
        assert status == 400 and json.loads(body)["error"] in ("bad_json", "bad_request"), body
        # a failed job's error names no absolute path
        garbage = tmp_path / "garbage.mp4"
        garbage.write_bytes(b"not a video" * 100)
        job = json.dumps({"path": str(garbage)}).encode()
        status, _, body = await raw(api, post(api, "/v1/transcode", job, "application/json"))
        assert status == 202, body
        record = await wait_job(api, json.loads(body)["id"], 30, token=TOKEN)
        assert record["status"] == "failed" and record["error"], record
        assert str(tmp_path) not in record["error"] and "/" + garbage.name not in record["error"]


async def test_path_inputs_only_under_roots_with_one_answer(tmp_path: Path) -> None:
    (tmp_path / "inside").mkdir()
    clip = generate_clip(tmp_path / "inside" / "clip.mp4", "320x180", 1.0)
    (tmp_path / "outside.mp4").write_bytes(clip.read_bytes())
    answers = set()
    async with service(tmp_path / "a", token=TOKEN) as (_svc, api):  # no roots: no path at all
        for path in (clip, tmp_path / "missing.mp4", Path("/etc/passwd")):
            body = json.dumps({"path": str(path)}).encode()
            status, _, answer = await raw(api, post(api, "/v1/transcode", body, "application/json"))
            assert_json_error(status, answer, 403, "forbidden", tmp_path)
            answers.add(answer)
    roots = [str(tmp_path / "inside")]
    async with service(tmp_path / "b", token=TOKEN, path_roots=roots) as (_svc, api):
        for path in (tmp_path / "outside.mp4", tmp_path / "inside" / "missing.mp4",
                     tmp_path / "inside" / ".." / "outside.mp4", tmp_path / "inside"):  # fmt: skip
            body = json.dumps({"path": str(path)}).encode()
            status, _, answer = await raw(api, post(api, "/v1/transcode", body, "application/json"))
            assert_json_error(status, answer, 403, "forbidden", tmp_path)
            answers.add(answer)
        assert len(answers) == 1, answers  # missing and not allowed look the same
        body = json.dumps({"path": str(clip), "profiles": "144p"}).encode()
        status, _, answer = await raw(api, post(api, "/v1/transcode", body, "application/json"))
        assert status == 202, answer


async def test_live_urls_follow_the_configured_rules(tmp_path: Path) -> None:
    async def live(api: str, url: str) -> tuple[int, bytes]:
        body = json.dumps({"url": url}).encode()
        status, _, answer = await raw(api, post(api, "/v1/live", body, "application/json"))
        return status, answer

    async with service(tmp_path / "a", token=TOKEN) as (_svc, api):
        for url in ("tcp://127.0.0.1:9", "http://localhost:9/x", "rtmp://10.1.2.3/app/key",
                    "srt://169.254.169.254:80", "udp://[::1]:5000", "http://[::ffff:127.0.0.1]/",
                    "udp://0.0.0.0:5000", "http://192.168.1.1/"):  # fmt: skip
            status, answer = await live(api, url)
            assert_json_error(status, answer, 403, "forbidden_url", tmp_path)
        status, answer = await live(api, "ftp://example.org/x")
        assert_json_error(status, answer, 400, "bad_url", tmp_path)
    options = dict(live_allow_networks=["127.0.0.1/32"], live_schemes=["tcp"])
    async with service(tmp_path / "b", token=TOKEN, **options) as (_svc, api):
        status, answer = await live(api, "http://127.0.0.1:9/x")  # not a configured scheme
        assert_json_error(status, answer, 403, "forbidden_url", tmp_path)
        status, answer = await live(api, "tcp://127.0.0.2:9")  # outside the allowed network
        assert_json_error(status, answer, 403, "forbidden_url", tmp_path)
        status, answer = await live(api, "tcp://127.0.0.1:9")  # the discard port: fails later
        assert status == 202, answer
        record = await wait_job(api, json.loads(answer)["id"], 30, token=TOKEN)
        assert record["status"] == "failed"
    options = dict(live_allow_networks=["127.0.0.0/8"], live_hosts=["cams.example"])
    async with service(tmp_path / "c", token=TOKEN, **options) as (_svc, api):
        status, answer = await live(api, "tcp://127.0.0.1:9")  # not a configured host
        assert_json_error(status, answer, 403, "forbidden_url", tmp_path)
