"""Who may do what on the HTTP API, checked before any route runs (an ASGI middleware):

- the Host header must name the address the API is bound to (or a loopback form of it, or a
  name in `api.hosts`): a web page that rebinds its own domain name to 127.0.0.1 is refused;
- with a token (the default) every request carries `Authorization: Bearer TOKEN`, except GET
  of the dashboard's page `/` and its files under `/static/` (no data, no secret);
- a request that changes state with a body (POST, PUT, PATCH) declares `application/json`,
  `video/*` or `application/octet-stream`: none of these can be sent by a web page of another
  origin without a CORS preflight, which this API never answers with permission. DELETE has no
  body and is itself a method a cross-origin page cannot send without a preflight.

Every refusal is JSON `{"error": code, "message": text}`."""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from node.config import ApiConfig

log = logging.getLogger("castnet.api")
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
UPLOAD_TYPES = ("video/", "application/octet-stream")
JSON_TYPE = "application/json"
PUBLIC_PREFIX = "/static/"  # the dashboard's files (node.api.dashboard)
MAX_HEAD_BYTES = 16 * 1024  # a request line and headers above this: 431


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": code, "message": message}).encode()


async def send_error(
    send: Send, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> None:
    """Answer a request with a JSON error (for middleware that runs before any route)."""
    body = error_body(code, message)
    raw = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def body_type_allowed(value: str) -> bool:
    kind = media_type(value)
    return kind == JSON_TYPE or (kind.startswith(UPLOAD_TYPES) and kind != "video/")


def split_host(value: str) -> tuple[str, int | None] | None:
    """(host, port) of a Host header (`name`, `name:port`, `1.2.3.4:port`, `[::1]:port`);
    None when it is not one of these forms."""
    value = value.strip()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = value.partition(":")
    if not host or (port_text and not (port_text.isascii() and port_text.isdigit())):
        return None
    port = int(port_text) if port_text else None
    if port is not None and port > 65535:
        return None
    return host.lower().rstrip("."), port


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def host_allowed(value: str, config: ApiConfig, bound: tuple[str, int]) -> bool:
    """Whether a Host header names this API: the bound port, and the bound address, a loopback
    form of a loopback (or wildcard) address, any address literal on a wildcard bind (a
    rebinding attack needs a domain name), or a configured name."""
    parsed = split_host(value)
    if parsed is None:
        return False
    host, port = parsed
    if (port if port is not None else 80) != bound[1]:
        return False
    if host in config.hosts:
        return True
    bound_ip = _ip(bound[0]) if bound[0] != "localhost" else ipaddress.ip_address("127.0.0.1")
    ip = _ip(host)
    if bound_ip is None:  # bound to a name: that name
        return host == bound[0].lower()
    if bound_ip.is_unspecified:
        return ip is not None or host == "localhost"
    if bound_ip.is_loopback:
        return host == "localhost" or (ip is not None and ip.is_loopback)
    return ip == bound_ip


class Guard:
    """The ASGI middleware that applies the rules above; `bound()` gives the (host, port) the
    API listens on (known once the socket is bound)."""

    def __init__(
        self, app: ASGIApp, config: ApiConfig, bound: Callable[[], tuple[str, int]]
    ) -> None:
        self.app, self.config, self.bound = app, config, bound

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        size += sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if size > MAX_HEAD_BYTES:  # (the server refuses a longer head that is still arriving)
            return await send_error(send, 431, "headers_too_large",
                                    f"the request head exceeds {MAX_HEAD_BYTES} bytes")  # fmt: skip
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in headers:  # a repeated Host, Authorization or Content-Type is ambiguous
                if name in (b"host", b"authorization", b"content-type"):
                    return await send_error(send, 400, "bad_request",
                                            f"repeated {name.decode()} header")  # fmt: skip
                continue
            headers[name] = value
        host = headers.get(b"host", b"").decode("latin-1")
        if not host_allowed(host, self.config, self.bound()):
            log.info("refused Host %r from %s", host[:100], _client(scope))
            return await send_error(send, 403, "forbidden_host",
                                    "the Host header does not name this API's address "
                                    "(add the name to api.hosts to allow it)")  # fmt: skip
        token = self.config.token
        if token and not _public(scope):
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, f"Bearer {token}".encode()):
                return await send_error(send, 401, "unauthorized",
                                        "send `Authorization: Bearer TOKEN`",
                                        {"WWW-Authenticate": "Bearer"})  # fmt: skip
        if scope["method"] in BODY_METHODS:
            kind = headers.get(b"content-type", b"").decode("latin-1")
            if not body_type_allowed(kind):
                return await send_error(send, 415, "unsupported_media_type",
                                        "send Content-Type: application/json, or the video "
                                        "as the raw body with Content-Type: video/... or "
                                        "application/octet-stream")  # fmt: skip
        await self.app(scope, receive, send)


def _public(scope: Scope) -> bool:
    """The dashboard's page and static files, which hold no data and no secret, load without
    the token (a browser cannot send it when it opens `/`); everything they show comes from
    routes that need it."""
    if scope["method"] not in ("GET", "HEAD"):
        return False
    path = scope.get("path", "")
    return path == "/" or (path.startswith(PUBLIC_PREFIX) and ".." not in path)


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "?"


TOKEN_FILE = "api-token"


class TokenFileError(Exception):
    """The token file cannot be read or created."""


def load_or_create_token(path: Path) -> tuple[str, bool]:
    """The API token kept in `path`, or a new random one written there (mode 0600);
    (token, whether it was created now)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_token(path), False
    except OSError as exc:
        raise TokenFileError(f"cannot create the API token file {path}: {exc}") from None
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


def _read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"cannot read the API token file {path}: {exc}") from None
    if len(token) < 16 or not token.isascii() or not token.isprintable() or " " in token:
        raise TokenFileError(
            f"the API token file {path} does not hold a token of 16 or more printable "
            "characters: delete it to have a new one made"
        )
    if path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users: chmod 600 it", path)
    return token
