"""Where a job may read from: local files only under `api.path_roots` (a missing file and one
outside the roots get the same answer), live URLs only with a configured scheme and host, never
to a private, loopback, link-local or multicast address unless `api.live_allow_networks` holds
it. A host name is resolved once here; the stream is opened later by name."""

from __future__ import annotations

import ipaddress
import os
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio

from node.api.errors import ApiError
from node.config import ApiConfig
from node.gateway.live import LiveError, check_live_url

RESOLVE_TIMEOUT_S = 5.0
NO_PATH = "no readable file at that path under api.path_roots"


def _file_under_roots(roots: tuple[Path, ...], value: str) -> Path | None:
    path = Path(value).resolve()
    if not any(path.is_relative_to(r.resolve()) for r in roots):
        return None
    return path if path.is_file() and os.access(path, os.R_OK) else None


async def local_source(config: ApiConfig, value: Any) -> Path:
    """A file the gateway may read for a JSON job: an absolute path to a readable file under
    `path_roots`. A missing file and one outside the roots get the same answer."""
    if not isinstance(value, str) or not value:
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_request", 'JSON jobs need "path": a file path')
    if "\x00" in value or len(value) > 4096:
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_path", "path holds a NUL byte or is too long")
    if not value.startswith("/"):
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_path", "path must be absolute")
    path = await trio.to_thread.run_sync(_file_under_roots, config.path_roots, value)
    if path is None:
        raise ApiError(HTTPStatus.FORBIDDEN, "forbidden", NO_PATH)
    return path


async def live_source(config: ApiConfig, value: Any) -> str:
    """A stream URL the config lets live mode open, or a local file path as for file jobs."""
    if not isinstance(value, str) or not value or len(value) > 2048:
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_request",
                       'live jobs need "url": a stream URL (tcp, udp, rtmp, srt, http(s)) or '
                       "an absolute file path")  # fmt: skip
    if value.startswith("file://"):
        value = value.removeprefix("file://")
    if value.startswith("/"):
        return str(await local_source(config, value))
    try:
        scheme = check_live_url(value)
    except LiveError as exc:
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_url", str(exc)) from None
    if scheme not in config.live_schemes:
        raise ApiError(HTTPStatus.FORBIDDEN, "forbidden_url",
                       f"live URLs may use {', '.join(config.live_schemes) or 'no scheme'} "
                       "(api.live_schemes)")  # fmt: skip
    try:
        host = urlsplit(value).hostname
    except ValueError:
        host = None
    if not host:
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_url", "the live URL names no host")
    if config.live_hosts and host.rstrip(".") not in config.live_hosts:
        message = f"live URLs may only name a host of api.live_hosts, not {host[:200]!r}"
        raise ApiError(HTTPStatus.FORBIDDEN, "forbidden_url", message)
    for ip in await _addresses(host):
        if not _reachable(ip, config):
            raise ApiError(HTTPStatus.FORBIDDEN, "forbidden_url",
                           f"{host[:200]} is a private, loopback or link-local address "
                           "(allow its range in api.live_allow_networks)")  # fmt: skip
    return value


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


async def _addresses(host: str) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host.strip("[]").split("%")[0])]
    except ValueError:
        pass
    try:
        with trio.fail_after(RESOLVE_TIMEOUT_S):
            infos = await trio.socket.getaddrinfo(host, None)
    except (OSError, trio.TooSlowError, UnicodeError):
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_url",
                       f"cannot resolve the live URL's host {host[:200]!r}") from None  # fmt: skip
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def _reachable(ip: IPAddress, config: ApiConfig) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in config.live_allow_networks):
        return True
    return ip.is_global and not ip.is_multicast
