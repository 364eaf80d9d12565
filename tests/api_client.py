"""A tiny blocking client for the gateway HTTP API, for tests (run it in a thread from trio)."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

import trio

_POLL_S = 0.05  # the API offers no push; poll with a deadline


def request(
    api: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    token: str | None = None,
) -> tuple[int, bytes]:
    url = urlsplit(api)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def request_json(api: str, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    status, body = request(api, method, path, **kw)
    return status, json.loads(body)


def upload(api: str, data: bytes, profiles: str | None = None, token: str | None = None) -> Any:
    path = "/v1/transcode" + (f"?profiles={profiles}" if profiles else "")
    status, body = request_json(api, "POST", path, body=data,
                                headers={"Content-Type": "video/mp4"}, token=token)  # fmt: skip
    assert status == 202, body
    return body


async def wait_job(api: str, job_id: str, timeout: float, token: str | None = None) -> Any:
    """Poll `GET /v1/jobs/{id}` until the job is done or failed."""
    return await wait_status(api, job_id, ("done", "failed"), timeout, token)


async def wait_status(
    api: str, job_id: str, statuses: tuple[str, ...], timeout: float, token: str | None = None
) -> Any:
    """Poll `GET /v1/jobs/{id}` until the job's status is one of `statuses`."""
    with trio.fail_after(timeout):
        while True:
            status, record = await trio.to_thread.run_sync(
                lambda: request_json(api, "GET", f"/v1/jobs/{job_id}", token=token)
            )
            assert status == 200, record
            if record["status"] in statuses:
                return record
            await trio.sleep(_POLL_S)
