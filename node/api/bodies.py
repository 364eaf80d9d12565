"""Reading the API's requests: bodies (Content-Length required, each chunk awaited at most
`api.body_timeout_s`, uploads streamed to disk), JSON objects, and the fields of a job request
(profiles, model, AI options), each refused with a specific 4xx `ApiError`."""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import AsyncIterator
from http import HTTPStatus
from pathlib import Path
from typing import Any, BinaryIO

import trio
from starlette.requests import ClientDisconnect, Request

from media.errors import MediaError
from media.profiles import parse_profiles
from node.api.errors import ApiError, ClientGone, scrub
from node.config import ApiConfig
from node.gateway.ai_jobs import AiJobError, check_options, check_request, parse_blend
from node.gateway.live_ai import LiveAi, LiveAiError, live_ai

MAX_JSON_BYTES = 64 * 1024
CHUNK = 1024 * 1024


def content_length(request: Request) -> int:
    if "transfer-encoding" in request.headers:
        raise ApiError(HTTPStatus.LENGTH_REQUIRED, "length_required",
                       "chunked bodies are not accepted: send Content-Length")  # fmt: skip
    text = request.headers.get("content-length")
    if text is None or not (text.isascii() and text.isdigit()):  # the server checked its form
        raise ApiError(HTTPStatus.LENGTH_REQUIRED, "length_required", "send Content-Length")
    return int(text)


def too_large(length: int, limit: int) -> ApiError:
    return ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large",
                    f"upload of {length} bytes exceeds the limit of {limit}")  # fmt: skip


async def body(config: ApiConfig, request: Request) -> AsyncIterator[bytes]:
    """The body's chunks, each awaited at most `body_timeout_s`."""
    stream = request.stream().__aiter__()
    while True:
        try:
            with trio.fail_after(config.body_timeout_s):
                chunk = await stream.__anext__()
        except StopAsyncIteration:
            return
        except trio.TooSlowError:
            message = f"no request body data for {config.body_timeout_s:g} s"
            raise ApiError(HTTPStatus.REQUEST_TIMEOUT, "timeout", message) from None
        except ClientDisconnect:
            raise ClientGone from None
        if chunk:
            yield chunk


async def read_json(config: ApiConfig, request: Request, length: int) -> bytes:
    if length > MAX_JSON_BYTES:
        raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large",
                       f"a JSON request holds at most {MAX_JSON_BYTES} bytes")  # fmt: skip
    parts = []
    async for chunk in body(config, request):
        parts.append(chunk)
    return b"".join(parts)


async def receive_upload(
    config: ApiConfig, request: Request, folder: Path, name: str, length: int
) -> Path:
    """Stream the body into `folder`/`name` (nothing of it kept if it does not arrive whole)."""
    path = folder / name
    limit = config.max_upload_bytes

    def create() -> BinaryIO:
        folder.mkdir(parents=True, exist_ok=True)
        return open(path, "wb")

    f = await trio.to_thread.run_sync(create)
    try:
        got, pending = 0, bytearray()
        async for chunk in body(config, request):
            got += len(chunk)
            if got > min(length, limit):  # the server stops at Content-Length; this is a guard
                raise too_large(got, limit)
            pending += chunk
            if len(pending) >= CHUNK:
                await trio.to_thread.run_sync(f.write, bytes(pending))
                pending.clear()
        if got < length:
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_request",
                           f"upload ended after {got} of {length} bytes")  # fmt: skip
        await trio.to_thread.run_sync(f.write, bytes(pending))
        await trio.to_thread.run_sync(f.close)
    except BaseException:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(f.close)
            await trio.to_thread.run_sync(functools.partial(shutil.rmtree, folder, True))
        raise
    return path


def json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_json",
                       f"body is not valid JSON: {exc.__class__.__name__} at byte "
                       f"{getattr(exc, 'pos', getattr(exc, 'start', 0))}") from None  # fmt: skip
    except (ValueError, RecursionError):  # e.g. an integer of thousands of digits, deep nesting
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_json",
                       "body holds a number or nesting too large to read") from None  # fmt: skip
    if not isinstance(value, dict):
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_json", "body must be a JSON object")
    return value


def profiles(value: Any, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or len(value) > 512:
        raise ApiError(
            HTTPStatus.BAD_REQUEST, "bad_profiles", 'profiles is a string like "360p,240p"'
        )
    try:
        parse_profiles(value)
    except MediaError as exc:
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_profiles", scrub(str(exc))) from None
    return value


def options(pipeline: str | None, value: Any, default_profiles: str) -> tuple[str, str]:
    """(profiles, model): a transcode's ladder, or an AI job's model name ("" for each
    orchestrator's default model of the pipeline)."""
    if pipeline is None:
        return profiles(value, default_profiles), ""
    if value is not None and not isinstance(value, str):
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_model", "model is a model's name")
    try:
        check_request(pipeline, value or "")
    except AiJobError as exc:
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_model", scrub(str(exc))) from None
    return "", value or ""


AI_QUERY_OPTIONS = ("style", "blend", "background", "infer_size")  # an upload's, as parameters
AI_OPTION_FIELDS = frozenset({*AI_QUERY_OPTIONS, "style_image"})  # refused below: a path


def query_options(request: Request) -> dict[str, Any]:
    """An upload's pipeline options from its query parameters (a blend as NAME=WEIGHT,...)."""
    options: dict[str, Any] = {}
    for name in AI_QUERY_OPTIONS:
        value = request.query_params.get(name)
        if value is None:
            continue
        if name == "blend":
            try:
                options[name] = parse_blend(value)
            except ValueError as exc:
                raise ApiError(HTTPStatus.BAD_REQUEST, "bad_options", scrub(str(exc))) from None
        else:
            options[name] = value
    return options


def ai_options(pipeline: str, options: dict[str, Any]) -> dict[str, Any]:
    """An AI file job's options, checked as the orchestrators will check them; a local path in
    any option is refused (400): the API takes nothing from this machine's disk for a model."""
    refuse_paths(options)
    try:
        return check_options(pipeline, options)
    except AiJobError as exc:
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_options", scrub(str(exc))) from None


def refuse_paths(options: dict[str, Any]) -> None:
    for name, value in options.items():
        if isinstance(value, str) and looks_like_path(value):
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_options",
                           f"{name[:64]}: local paths are not accepted over the API; use a "
                           "style name, a blend, '#rrggbb' or 'blur'")  # fmt: skip


def live_ai_request(body: dict[str, Any], options: dict[str, Any]) -> LiveAi:
    """A live AI request's pipeline, model and options (the fields beside them), checked; a path
    in any option is refused: the API takes nothing from this machine's disk for a model."""
    pipeline, model = body["pipeline"], body.get("model", "")
    if not isinstance(pipeline, str) or not isinstance(model, str):
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_request", "pipeline and model are strings")
    refuse_paths(options)
    try:
        return live_ai(pipeline, model, options)
    except LiveAiError as exc:
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_options", scrub(str(exc))) from None


def looks_like_path(text: str) -> bool:
    return any(c in text for c in "/\\") or text.startswith(("~", ".")) or "." in text[-5:]
