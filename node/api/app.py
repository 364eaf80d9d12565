"""The gateway's HTTP API as a Starlette app (`build_app`), served by `node.api.server`:

- `POST /v1/transcode`: the video as the raw body (`?profiles=360p,240p`), or JSON
  `{"path": "/abs/file.mp4", "profiles": "..."}` for a file under `api.path_roots`; answers
  202 with the job id.
- `GET /v1/jobs`, `GET /v1/jobs/{id}`: status and progress, and while a file job is held by the
  runner its `queue_position` (1 = the next to start, 0 = running; `gateway.max_jobs` run at
  once); `GET /v1/jobs/{id}/<file>`: the HLS output once done (`master.m3u8`,
  `<rendition>/index.m3u8`, segments), path traversal refused.
- `POST /v1/live`: JSON `{"url": "rtmp://host/app/key", "profiles": "..."}` (a scheme of
  `api.live_schemes`, a host of `api.live_hosts` if set, never a private, loopback or link-local
  address unless `api.live_allow_networks` holds it; or an absolute file path under
  `api.path_roots`); the job's live HLS playlist is served under `/v1/jobs/{id}/` while it
  runs. `DELETE /v1/jobs/{id}` stops a live job. Live AI: `"pipeline"` (filter, upscale, style,
  matte), optional `"model"`, and the pipeline's options beside them (`"style": "mosaic"`,
  `"blend": {...}`, `"infer_size": "320x180"`, `"background": "#00ff00"` or `"blur"`); each
  segment is then an AI job, published with its audio; local paths are refused (400).
- `POST /v1/ai/{pipeline}` (detect-faces, detect-text, filter, upscale, style, matte; 404 for any
  other): the same inputs as a transcode, with `?model=NAME` or `"model"` instead of profiles
  (default: each orchestrator's model for the pipeline), and the style/matte options beside it:
  JSON fields (`"style": "mosaic"`, `"blend": {"mosaic": 0.7, "starry": 0.3}`,
  `"background": "#00ff00"` or `"blur"`, `"infer_size": "160x90"`), or for an upload query
  parameters (`?style=mosaic&infer_size=160x90`, `?blend=mosaic=0.7,starry=0.3` URL-encoded);
  bad options and local paths are refused (400 `bad_options`); the job record shows the
  options; a done job serves `detections.jsonl` (a line per frame:
  absolute frame number, pts, time, boxes) or the processed video's HLS (`master.m3u8`).
- `GET /v1/status`: the node's roles, addresses and counters.

Every error is JSON `{"error": code, "message": text}`, without exception text or absolute paths.
`node.api.guard` checks Host, token and content type before any route; others may add routes
(`build_app(api, extra_routes)`), which the same guard protects."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any, BinaryIO

import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from node.api import bodies
from node.api.errors import ApiError, ClientGone, scrub
from node.api.guard import JSON_TYPE, Guard, media_type
from node.api.sources import live_source, local_source
from node.config import ApiConfig
from node.gateway.ai_jobs import AiJobError, check_request
from node.gateway.job_book import (
    AI,
    DONE,
    INPUT_NAME,
    JOB_ID,
    LIVE,
    QUEUED,
    RUNNING,
    JobBook,
    JobRecord,
    now_ms,
)
from node.gateway.jobs import NotStoppable, QueueFull

log = logging.getLogger("castnet.api")
CHUNK = 1024 * 1024
CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
}
INTERNAL_MESSAGE = "internal error; the node's log has the details"


class GatewayApi:
    """What the routes need: the config (its token is the one in force), the job book, and the
    service's callbacks (all called in the trio loop)."""

    def __init__(
        self,
        config: ApiConfig,
        book: JobBook,
        enqueue: Callable[[str], None],
        status: Callable[[], dict[str, Any]],
        default_profiles: str,
        stop: Callable[[str], str] | None = None,
        queue_position: Callable[[str], int | None] | None = None,
    ) -> None:
        self.config = config
        self.book = book
        self.enqueue = enqueue
        self.status = status
        self.default_profiles = default_profiles
        self.stop = stop  # stops a live job
        self.queue_position = queue_position  # a file job's place in the runner's queue
        self.address: tuple[str, int] = (config.host, config.port)  # set once bound


def json_error(exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": exc.code, "message": exc.message}, int(exc.status),
                        headers=exc.headers)  # fmt: skip


Handler = Callable[[GatewayApi, Request], Awaitable[Response]]


def _endpoint(api: GatewayApi, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A route: ApiError answers its JSON; a bug answers a bare 500 and is logged once."""

    @functools.wraps(handler)
    async def run(request: Request) -> Response:
        try:
            return await handler(api, request)
        except ApiError as exc:
            return json_error(exc)
        except (ClientGone, ClientDisconnect):
            log.info("%s %s: the client went away", request.method, request.url.path[:200])
            return Response(status_code=499)  # never reaches the client
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path[:200])
            return json_error(
                ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, "internal", INTERNAL_MESSAGE)
            )

    return run


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    status = HTTPStatus(exc.status_code)
    message = {
        404: f"no such endpoint {request.url.path[:200]}",
        405: f"{request.method} is not allowed here; allowed: {(exc.headers or {}).get('Allow')}",
    }.get(exc.status_code, status.phrase)
    code = codes.get(exc.status_code, status.phrase.lower().replace(" ", "_"))
    return JSONResponse({"error": code, "message": message}, exc.status_code, headers=exc.headers)


def build_app(api: GatewayApi, extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The API's app: the routes below plus `extra_routes`, behind `node.api.guard.Guard`."""

    def route(path: str, handler: Handler, methods: list[str]) -> Route:
        return Route(path, _endpoint(api, handler), methods=methods)

    routes: list[BaseRoute] = [
        route("/v1/status", _status, ["GET"]),
        route("/v1/transcode", _transcode, ["POST"]),
        route("/v1/live", _live, ["POST"]),
        route("/v1/ai/{pipeline}", _ai, ["POST"]),
        route("/v1/jobs", _jobs, ["GET"]),
        route("/v1/jobs/", _jobs, ["GET"]),
        route("/v1/jobs/{job_id}", _job_record, ["GET", "DELETE"]),
        route("/v1/jobs/{job_id}/{rest:path}", _output, ["GET"]),
        *extra_routes,
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard, config=api.config, bound=lambda: api.address)],
        exception_handlers={HTTPException: _http_error},
    )
    app.router.redirect_slashes = False
    return app


# -- routes ----------------------------------------------------------------------------------


async def _status(api: GatewayApi, request: Request) -> Response:
    return JSONResponse(api.status())


async def _jobs(api: GatewayApi, request: Request) -> Response:
    records = await trio.to_thread.run_sync(api.book.all)
    return JSONResponse({"jobs": [_public(r, api) for r in records]})


async def _job_record(api: GatewayApi, request: Request) -> Response:
    record = await _job(api, request.path_params["job_id"])
    if request.method == "DELETE":
        if record.kind != LIVE:  # a file job cannot be deleted or stopped
            raise ApiError(HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed",
                           "DELETE is not allowed here; allowed: GET, HEAD (only live jobs "
                           "can be stopped)", {"Allow": "GET, HEAD"})  # fmt: skip
        return _stop(api, record)
    return JSONResponse(_public(record, api))


async def _transcode(api: GatewayApi, request: Request) -> Response:
    return await _file_job(api, request, None)


async def _ai(api: GatewayApi, request: Request) -> Response:
    pipeline = request.path_params["pipeline"]
    try:
        check_request(pipeline)
    except AiJobError as exc:
        raise ApiError(HTTPStatus.NOT_FOUND, "unknown_pipeline", str(exc)) from None
    return await _file_job(api, request, pipeline)


def _public(record: JobRecord, api: GatewayApi) -> dict[str, Any]:
    out = record.public()
    if out.get("error"):
        out["error"] = scrub(out["error"])
    if api.queue_position is not None and record.status in (QUEUED, RUNNING):
        # 1 = the next to start, 0 = running; absent once finished (or never held: live jobs)
        position = api.queue_position(record.id)
        if position is not None:
            out["queue_position"] = position
    return out


async def _job(api: GatewayApi, job_id: str) -> JobRecord:
    record = None
    if JOB_ID.match(job_id):
        record = await trio.to_thread.run_sync(api.book.get, job_id)
    if record is None:
        raise ApiError(HTTPStatus.NOT_FOUND, "unknown_job", f"no job {job_id[:64]!r}")
    return record


async def _enqueue(api: GatewayApi, record: JobRecord) -> None:
    await trio.to_thread.run_sync(api.book.put, record)
    try:
        api.enqueue(record.id)
    except QueueFull as exc:
        await trio.to_thread.run_sync(
            functools.partial(api.book.update, record.id, status="failed", error=str(exc))
        )
        raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "busy", str(exc)) from None


async def _file_job(api: GatewayApi, request: Request, pipeline: str | None) -> Response:
    """A file job: a transcode, or an AI job when `pipeline` is given."""
    option = "profiles" if pipeline is None else "model"
    kind = media_type(request.headers.get("content-type", ""))
    length = bodies.content_length(request)
    job_id = api.book.new_id()
    ai_options: dict[str, Any] = {}
    if kind == JSON_TYPE:
        body = bodies.json_object(await bodies.read_json(api.config, request, length))
        unknown = sorted(set(body) - {"path", option})
        strange = [key for key in unknown if pipeline is None or key not in bodies.AI_OPTION_FIELDS]
        if strange:
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_request", f"unknown field {strange[0]!r}")
        profiles, model = bodies.options(pipeline, body.get(option), api.default_profiles)
        if pipeline is not None:  # the fields beside path and model are the pipeline's options
            ai_options = bodies.ai_options(pipeline, {key: body[key] for key in unknown})
        source, uploaded = await local_source(api.config, body.get("path")), False
    else:  # a video type: the guard let nothing else through
        if length > api.config.max_upload_bytes:
            raise bodies.too_large(length, api.config.max_upload_bytes)
        if length == 0:
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_request", "empty upload")
        value = request.query_params.get(option)
        profiles, model = bodies.options(pipeline, value, api.default_profiles)
        if pipeline is not None:
            ai_options = bodies.ai_options(pipeline, bodies.query_options(request))
        folder = api.book.job_dir(job_id)
        path = await bodies.receive_upload(api.config, request, folder, INPUT_NAME, length)
        source, uploaded = path, True
    record = JobRecord(job_id, str(source), profiles, uploaded, created_ms=now_ms())
    if pipeline is not None:
        record = dataclasses.replace(record, kind=AI, pipeline=pipeline, model=model,
                                     options=ai_options)  # fmt: skip
    await _enqueue(api, record)
    url = f"/v1/jobs/{job_id}"
    return JSONResponse({"id": job_id, "status": "queued", "url": url}, 202,
                        headers={"Location": url})  # fmt: skip


LIVE_FIELDS = frozenset({"url", "profiles", "pipeline", "model"})


async def _live(api: GatewayApi, request: Request) -> Response:
    if media_type(request.headers.get("content-type", "")) != JSON_TYPE:
        raise ApiError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                       'send JSON {"url": ..., "profiles": ...}')  # fmt: skip
    length = bodies.content_length(request)
    body = bodies.json_object(await bodies.read_json(api.config, request, length))
    extra = {k: v for k, v in body.items() if k not in LIVE_FIELDS}
    if extra and "pipeline" not in body:
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_request", f"unknown field {sorted(extra)[0]!r}")
    ai = bodies.live_ai_request(body, extra) if "pipeline" in body else None
    profiles = bodies.profiles(body.get("profiles"), api.default_profiles)
    source = await live_source(api.config, body.get("url"))
    job_id = api.book.new_id()
    record = JobRecord(job_id, source, profiles, created_ms=now_ms(), kind=LIVE)
    if ai is not None:
        record = dataclasses.replace(record, pipeline=ai.pipeline, model=ai.model,
                                     options=dict(ai.options))  # fmt: skip
    await _enqueue(api, record)
    url = f"/v1/jobs/{job_id}"
    return JSONResponse({"id": job_id, "status": "queued", "url": url,
                         "playlist": f"{url}/master.m3u8"}, 202,
                        headers={"Location": url})  # fmt: skip


def _stop(api: GatewayApi, record: JobRecord) -> Response:
    if api.stop is None:
        raise ApiError(HTTPStatus.NOT_IMPLEMENTED, "not_implemented",
                       "this gateway cannot stop jobs")  # fmt: skip
    try:
        status = api.stop(record.id)
    except NotStoppable as exc:
        raise ApiError(HTTPStatus.CONFLICT, "not_stoppable", str(exc)) from None
    return JSONResponse({"id": record.id, "status": status}, 202)


async def _output(api: GatewayApi, request: Request) -> Response:
    record = await _job(api, request.path_params["job_id"])
    names = request.path_params["rest"].split("/")
    if any(n in ("", ".", "..") or "\\" in n or "\x00" in n for n in names):
        raise ApiError(
            HTTPStatus.BAD_REQUEST, "bad_path", "output paths are plain names under the job"
        )
    live = record.kind == LIVE and record.status in (RUNNING, DONE)
    if record.status != DONE and not live:
        raise ApiError(HTTPStatus.CONFLICT, "not_ready", f"job {record.id} is {record.status}")
    root = api.book.out_dir(record.id)
    opened = await trio.to_thread.run_sync(_open_output, root, names)
    if opened is None:
        raise ApiError(
            HTTPStatus.NOT_FOUND, "not_found", f"job {record.id} has no {'/'.join(names)[:200]}"
        )
    f, size = opened
    path = Path(names[-1])
    headers = {"Content-Length": str(size)}
    if live and path.suffix == ".m3u8":  # a live playlist changes every segment
        headers["Cache-Control"] = "no-cache"
    kind = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
    if request.method == "HEAD":
        await trio.to_thread.run_sync(f.close)
        return Response(headers=headers, media_type=kind)
    return StreamingResponse(_chunks(f, size), headers=headers, media_type=kind)


def _open_output(root: Path, names: list[str]) -> tuple[BinaryIO, int] | None:
    """The file (open, so a live segment sliding out meanwhile still reads) and its size."""
    root = root.resolve()
    path = root.joinpath(*names).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by _chunks
    except OSError:
        return None
    return f, os.fstat(f.fileno()).st_size


async def _chunks(f: BinaryIO, size: int) -> AsyncIterator[bytes]:
    try:
        left = size
        while left > 0:
            chunk = await trio.to_thread.run_sync(f.read, min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
    finally:
        f.close()
