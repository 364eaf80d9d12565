"""The gateway's HTTP API (standard library `ThreadingHTTPServer` in threads beside the trio loop):

- `POST /v1/transcode`: the video as the raw body (`?profiles=360p,240p`), or JSON
  `{"path": "/abs/file.mp4", "profiles": "..."}`; answers 202 with the job id.
- `GET /v1/jobs`, `GET /v1/jobs/{id}`: status and progress; `GET /v1/jobs/{id}/<file>`: the HLS
  output once done (`master.m3u8`, `<rendition>/index.m3u8`, segments), path traversal refused.
- `POST /v1/live`: JSON `{"url": "tcp://127.0.0.1:9000", "profiles": "..."}` (tcp, udp, rtmp,
  srt, http(s), or an absolute file path under `path_roots`); the job's live HLS playlist is
  served under `/v1/jobs/{id}/` while it runs. `DELETE /v1/jobs/{id}` stops a live job.
- `POST /v1/ai/{pipeline}` (detect-faces, detect-text, filter, upscale; 404 for any other): the
  same inputs as a transcode, with `?model=NAME` or `"model"` instead of profiles (default: each
  orchestrator's model for the pipeline); a done job serves `detections.jsonl` (a line per frame:
  absolute frame number, pts, time, boxes) or the processed video's HLS (`master.m3u8`).
- `GET /v1/status`: the node's roles, addresses and counters.

Every error is JSON `{"error": code, "message": text}`. With a token configured every request
needs `Authorization: Bearer TOKEN`; the config refuses a non-loopback address without one."""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import shutil
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import trio

from media.errors import MediaError
from media.profiles import parse_profiles
from node.config import ApiConfig
from node.gateway.ai_jobs import AiJobError, check_request
from node.gateway.jobs import (
    AI,
    DONE,
    INPUT_NAME,
    JOB_ID,
    LIVE,
    RUNNING,
    JobBook,
    JobRecord,
    NotStoppable,
    QueueFull,
    now_ms,
)
from node.gateway.live import LiveError, check_live_url

log = logging.getLogger("castnet.api")
MAX_JSON_BYTES = 64 * 1024
MAX_CONNECTIONS = 64
SOCKET_TIMEOUT_S = 60.0
CHUNK = 1024 * 1024
CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
}


class ApiError(Exception):
    def __init__(self, status: HTTPStatus, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class GatewayApi:
    """What the handlers need: the config, the job book, and trio-side callbacks."""

    def __init__(
        self,
        config: ApiConfig,
        book: JobBook,
        enqueue: Callable[[str], None],
        status: Callable[[], dict[str, Any]],
        default_profiles: str,
        token: trio.lowlevel.TrioToken,
        stop: Callable[[str], str] | None = None,
    ) -> None:
        self.config = config
        self.book = book
        self.enqueue = enqueue  # runs in the trio thread
        self.status = status  # runs in the trio thread
        self.default_profiles = default_profiles
        self.trio_token = token
        self.stop = stop  # runs in the trio thread: stops a live job

    def in_trio(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return trio.from_thread.run_sync(fn, *args, trio_token=self.trio_token)
        except trio.RunFinishedError:
            raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "shutting_down",
                           "the node is shutting down") from None  # fmt: skip


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: GatewayApi

    def __init__(self, address: tuple[str, int], api: GatewayApi) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.api = api
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):  # too many open connections: drop this one
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "castnet"
    timeout = SOCKET_TIMEOUT_S
    server: _Server

    # -- plumbing --------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send_json(
        self, status: HTTPStatus, body: Any, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, exc: ApiError) -> None:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == HTTPStatus.UNAUTHORIZED else {}
        if exc.status == HTTPStatus.METHOD_NOT_ALLOWED:
            headers["Allow"] = exc.message.rsplit(": ", 1)[-1]
        self._send_json(exc.status, {"error": exc.code, "message": exc.message}, headers)

    def _dispatch(self, method: str) -> None:
        api = self.server.api
        started = time.perf_counter()
        try:
            self._authorize(api)
            url = urlsplit(self.path)
            parts = url.path.split("/")
            if parts[:2] != ["", "v1"] or len(parts) < 3:
                raise ApiError(HTTPStatus.NOT_FOUND, "not_found", f"no such endpoint {url.path}")
            self._route(api, method, parts[2:], parse_qs(url.query))
        except ApiError as exc:
            if method == "POST":  # the body may be unread: do not reuse the connection
                self.close_connection = True
            self._error(exc)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # a bug answers 500 and is logged, never kills the server
            log.exception("%s %s failed", method, self.path)
            self.close_connection = True
            self._error(ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, "internal", repr(exc)[:500]))
        log.info("%s %s %.1f ms", method, self.path[:200], (time.perf_counter() - started) * 1e3)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _authorize(self, api: GatewayApi) -> None:
        token = api.config.token
        if not token:
            return
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise ApiError(HTTPStatus.UNAUTHORIZED, "unauthorized",
                           "send `Authorization: Bearer TOKEN`")  # fmt: skip

    # -- routes ----------------------------------------------------------------------------

    def _route(
        self, api: GatewayApi, method: str, parts: list[str], query: dict[str, list[str]]
    ) -> None:
        head, rest = parts[0], parts[1:]
        if head == "transcode" and not rest:
            _allow(method, "POST")
            return self._file_job(api, query)
        if head == "live" and not rest:
            _allow(method, "POST")
            return self._live(api)
        if head == "jobs" and len(rest) == 1 and method == "DELETE":
            record = _job(api, rest[0])
            if record.kind == LIVE:  # a file job cannot be deleted or stopped
                return self._stop(api, record)
        if head == "ai" and len(rest) == 1:
            _allow(method, "POST")
            pipeline = unquote(rest[0])
            try:
                check_request(pipeline)
            except AiJobError as exc:
                raise ApiError(HTTPStatus.NOT_FOUND, "unknown_pipeline", str(exc)) from None
            return self._file_job(api, query, pipeline)
        if head == "status" and not rest:
            _allow(method, "GET", "HEAD")
            return self._send_json(HTTPStatus.OK, api.in_trio(api.status))
        if head == "jobs":
            _allow(method, "GET", "HEAD")
            if not rest or rest == [""]:
                jobs = [r.public() for r in api.book.all()]
                return self._send_json(HTTPStatus.OK, {"jobs": jobs})
            record = _job(api, rest[0])
            if len(rest) == 1:
                return self._send_json(HTTPStatus.OK, record.public())
            return self._output(api, record, rest[1:])
        raise ApiError(HTTPStatus.NOT_FOUND, "not_found", f"no such endpoint /v1/{'/'.join(parts)}")

    def _file_job(
        self, api: GatewayApi, query: dict[str, list[str]], pipeline: str | None = None
    ) -> None:
        """A file job: a transcode, or an AI job when `pipeline` is given."""
        option = "profiles" if pipeline is None else "model"
        kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        length = self._content_length()
        job_id = api.book.new_id()
        if kind == "application/json":
            if length > MAX_JSON_BYTES:
                raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large",
                               f"a JSON request holds at most {MAX_JSON_BYTES} bytes")  # fmt: skip
            request = _json_object(self.rfile.read(length))
            unknown = sorted(set(request) - {"path", option})
            if unknown:
                raise ApiError(
                    HTTPStatus.BAD_REQUEST, "bad_request", f"unknown field {unknown[0]!r}"
                )
            profiles, model = _options(pipeline, request.get(option), api.default_profiles)
            source, uploaded = _local_source(api.config, request.get("path")), False
        elif kind.startswith("multipart/"):
            raise ApiError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                           "send the video as the raw request body (Content-Type: video/mp4 or "
                           "application/octet-stream), or JSON {\"path\": ...}")  # fmt: skip
        else:
            if length > api.config.max_upload_bytes:
                raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large",
                               f"upload of {length} bytes exceeds the limit of "
                               f"{api.config.max_upload_bytes}")  # fmt: skip
            if length == 0:
                raise ApiError(HTTPStatus.BAD_REQUEST, "bad_request", "empty upload")
            profiles, model = _options(pipeline, query.get(option, [None])[0], api.default_profiles)
            source, uploaded = self._receive_upload(api.book, job_id, length), True
        record = JobRecord(job_id, str(source), profiles, uploaded, created_ms=now_ms())
        if pipeline is not None:
            record = dataclasses.replace(record, kind=AI, pipeline=pipeline, model=model)
        api.book.put(record)
        try:
            api.in_trio(api.enqueue, job_id)
        except QueueFull as exc:
            api.book.update(job_id, status="failed", error=str(exc))
            raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "busy", str(exc)) from None
        url = f"/v1/jobs/{job_id}"
        self._send_json(HTTPStatus.ACCEPTED, {"id": job_id, "status": "queued", "url": url},
                        {"Location": url})  # fmt: skip

    def _content_length(self) -> int:
        if self.headers.get("Transfer-Encoding"):
            raise ApiError(HTTPStatus.LENGTH_REQUIRED, "length_required",
                           "chunked bodies are not accepted: send Content-Length")  # fmt: skip
        text = self.headers.get("Content-Length")
        if text is None or not text.strip().isdigit():
            raise ApiError(HTTPStatus.LENGTH_REQUIRED, "length_required", "send Content-Length")
        return int(text)

    def _receive_upload(self, book: JobBook, job_id: str, length: int) -> Path:
        folder = book.job_dir(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / INPUT_NAME
        left = length
        try:
            with open(path, "wb") as f:
                while left:
                    chunk = self.rfile.read(min(CHUNK, left))
                    if not chunk:
                        got = length - left
                        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_request",
                                       f"upload ended after {got} of {length} bytes")  # fmt: skip
                    f.write(chunk)
                    left -= len(chunk)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return path

    def _output(self, api: GatewayApi, record: JobRecord, rest: list[str]) -> None:
        names = [unquote(p) for p in rest]
        if any(n in ("", ".", "..") or "/" in n or "\\" in n or "\x00" in n for n in names):
            raise ApiError(
                HTTPStatus.BAD_REQUEST, "bad_path", "output paths are plain names under the job"
            )
        live = record.kind == LIVE and record.status in (RUNNING, DONE)
        if record.status != DONE and not live:
            raise ApiError(HTTPStatus.CONFLICT, "not_ready", f"job {record.id} is {record.status}")
        root = api.book.out_dir(record.id).resolve()
        path = root.joinpath(*names).resolve()
        if not path.is_relative_to(root):
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_path", "path leaves the job's output")
        if not path.is_file():
            raise ApiError(
                HTTPStatus.NOT_FOUND, "not_found", f"job {record.id} has no {'/'.join(names)}"
            )
        size = path.stat().st_size
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", CONTENT_TYPES.get(path.suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(size))
        if live and path.suffix == ".m3u8":  # a live playlist changes every segment
            self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            f = open(path, "rb")  # noqa: SIM115 - a live segment may slide out meanwhile
        except FileNotFoundError:
            self.close_connection = True  # headers are out: end the response short
            return
        with f:
            shutil.copyfileobj(f, self.wfile, CHUNK)

    def _live(self, api: GatewayApi) -> None:
        kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise ApiError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                           'send JSON {"url": ..., "profiles": ...}')  # fmt: skip
        length = self._content_length()
        if length > MAX_JSON_BYTES:
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large",
                           f"a JSON request holds at most {MAX_JSON_BYTES} bytes")  # fmt: skip
        request = _json_object(self.rfile.read(length))
        unknown = sorted(set(request) - {"url", "profiles"})
        if unknown:
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_request", f"unknown field {unknown[0]!r}")
        profiles = _profiles(request.get("profiles"), api.default_profiles)
        source = _live_source(api.config, request.get("url"))
        job_id = api.book.new_id()
        record = JobRecord(job_id, source, profiles, created_ms=now_ms(), kind=LIVE)
        api.book.put(record)
        try:
            api.in_trio(api.enqueue, job_id)
        except QueueFull as exc:
            api.book.update(job_id, status="failed", error=str(exc))
            raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "busy", str(exc)) from None
        url = f"/v1/jobs/{job_id}"
        self._send_json(HTTPStatus.ACCEPTED, {"id": job_id, "status": "queued", "url": url,
                                              "playlist": f"{url}/master.m3u8"},
                        {"Location": url})  # fmt: skip

    def _stop(self, api: GatewayApi, record: JobRecord) -> None:
        if api.stop is None:
            raise ApiError(HTTPStatus.NOT_IMPLEMENTED, "not_implemented",
                           "this gateway cannot stop jobs")  # fmt: skip
        try:
            status = api.in_trio(api.stop, record.id)
        except NotStoppable as exc:
            raise ApiError(HTTPStatus.CONFLICT, "not_stoppable", str(exc)) from None
        self._send_json(HTTPStatus.ACCEPTED, {"id": record.id, "status": status})


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise ApiError(HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed",
                       f"{method} is not allowed here; allowed: {', '.join(allowed)}")  # fmt: skip


def _job(api: GatewayApi, job_id: str) -> JobRecord:
    record = api.book.get(job_id) if JOB_ID.match(job_id) else None
    if record is None:
        raise ApiError(HTTPStatus.NOT_FOUND, "unknown_job", f"no job {job_id[:64]!r}")
    return record


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(
            HTTPStatus.BAD_REQUEST, "bad_json", f"body is not valid JSON: {exc}"
        ) from None
    if not isinstance(value, dict):
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_json", "body must be a JSON object")
    return value


def _profiles(value: Any, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or len(value) > 512:
        raise ApiError(
            HTTPStatus.BAD_REQUEST, "bad_profiles", 'profiles is a string like "360p,240p"'
        )
    try:
        parse_profiles(value)
    except MediaError as exc:
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_profiles", str(exc)) from None
    return value


def _options(pipeline: str | None, value: Any, default_profiles: str) -> tuple[str, str]:
    """(profiles, model): a transcode's ladder, or an AI job's model name ("" for each
    orchestrator's default model of the pipeline)."""
    if pipeline is None:
        return _profiles(value, default_profiles), ""
    if value is not None and not isinstance(value, str):
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_model", "model is a model's name")
    try:
        check_request(pipeline, value or "")
    except AiJobError as exc:
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_model", str(exc)) from None
    return "", value or ""


def _local_source(config: ApiConfig, value: Any) -> Path:
    """A file the gateway may read for a JSON job: absolute, existing, and under `path_roots`
    (any path when none are set and the API is bound to loopback)."""
    if not isinstance(value, str) or not value:
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_request", 'JSON jobs need "path": a file path')
    path = Path(value)
    if not path.is_absolute():
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_path", "path must be absolute")
    path = path.resolve()
    roots = [r.resolve() for r in config.path_roots]
    if roots and not any(path.is_relative_to(r) for r in roots):
        raise ApiError(HTTPStatus.FORBIDDEN, "forbidden", "path is outside api.path_roots")
    if not roots and not config.loopback:
        raise ApiError(HTTPStatus.FORBIDDEN, "forbidden",
                       "path jobs need api.path_roots when the API is not on loopback")  # fmt: skip
    if not path.is_file():
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_path", f"{value} is not a readable file")
    return path


def _live_source(config: ApiConfig, value: Any) -> str:
    """A stream URL live mode accepts, or a local file path checked as for file jobs."""
    if not isinstance(value, str) or not value or len(value) > 2048:
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_request",
                       'live jobs need "url": a stream URL (tcp, udp, rtmp, srt, http(s)) or '
                       "an absolute file path")  # fmt: skip
    if value.startswith("file://"):
        value = value.removeprefix("file://")
    if value.startswith("/"):
        return str(_local_source(config, value))
    try:
        check_live_url(value)
    except LiveError as exc:
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_url", str(exc)) from None
    return value


async def serve_api(api: GatewayApi, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; `task_status.started((host, port))` with the bound address."""
    server = _Server((api.config.host, api.config.port), api)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="castnet-api", daemon=True)  # fmt: skip
    thread.start()
    host, port = server.server_address[:2]
    log.info("gateway API on http://%s:%s", host, port)
    try:
        task_status.started((str(host), int(port)))
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(server.shutdown)
            server.server_close()
