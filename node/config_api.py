"""The `[api]` and `[metrics]` sections: where the gateway's HTTP API and the metrics listener
bind, and the API's guards (its bearer token, accepted Host names, upload and time limits,
which files and live URLs a request may name)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.config_values import (
    ConfigError,
    boolean,
    integer,
    is_loopback,
    number,
    parse_listen,
    path_value,
    strings,
)
from node.gateway.work import LIVE_SCHEMES

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
GiB = 1024**3
DEFAULT_API = "127.0.0.1:8935"


@dataclass(frozen=True, slots=True)
class ApiConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8935
    token: str = ""  # empty: the service creates one in the data dir, unless not require_token
    require_token: bool = True  # False only on a loopback address
    hosts: tuple[str, ...] = ()  # Host header names accepted besides the bound address
    max_upload_bytes: int = 2 * GiB
    path_roots: tuple[Path, ...] = ()  # JSON `path` inputs only under these (none by default)
    live_schemes: tuple[str, ...] = LIVE_SCHEMES
    live_hosts: tuple[str, ...] = ()  # empty: any host that is not a private address
    live_allow_networks: tuple[IPNetwork, ...] = ()  # private ranges live URLs may reach
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_client_connections: int = 32

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Where the metrics-only listener serves `GET /metrics` (None: no such listener; the
    gateway API serves /metrics anyway)."""

    listen: tuple[str, int] | None = None


def api_config(t: Mapping[str, Any], base: Path) -> ApiConfig:
    host, port = parse_listen(t.get("listen", DEFAULT_API))
    token = t.get("token", "")
    if not isinstance(token, str):
        raise ConfigError("api.token must be a string")
    if t.get("token_file"):
        path = path_value(t["token_file"], base, "api.token_file")
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"api.token_file: cannot read {path}: {exc}") from None
    if token and (len(token) < 16 or not token.isascii() or not token.isprintable()
                  or " " in token):  # fmt: skip
        raise ConfigError("api token must be at least 16 characters (printable ASCII, no spaces)")
    require = boolean(t.get("require_token", True), "api.require_token")
    if not require and token:
        raise ConfigError("api.require_token = false contradicts a configured api token")
    if not require and not is_loopback(host):
        raise ConfigError(
            f"api.listen {host}:{port} is not a loopback address: api.require_token = false "
            "is allowed on loopback only"
        )
    roots = tuple(
        path_value(p, base, "api.path_roots")
        for p in strings(t.get("path_roots", []), "api.path_roots")
    )
    schemes = tuple(s.lower() for s in strings(t.get("live_schemes", list(LIVE_SCHEMES)),
                                                "api.live_schemes"))  # fmt: skip
    unknown = [s for s in schemes if s not in LIVE_SCHEMES]
    if unknown:
        raise ConfigError(
            f"api.live_schemes: {unknown[0]!r} is not one of {', '.join(LIVE_SCHEMES)}"
        )
    networks = []
    for text in strings(t.get("live_allow_networks", []), "api.live_allow_networks"):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(
                f"api.live_allow_networks: {text!r} is not an address or network like "
                '"127.0.0.1/32"'
            ) from None
    return ApiConfig(
        enabled=boolean(t.get("enabled", True), "api.enabled"),
        host=host,
        port=port,
        token=token,
        require_token=require,
        hosts=tuple(h.lower() for h in strings(t.get("hosts", []), "api.hosts")),
        max_upload_bytes=integer(t.get("max_upload_bytes", 2 * GiB), "api.max_upload_bytes", 1),
        path_roots=roots,
        live_schemes=schemes,
        live_hosts=tuple(h.lower() for h in strings(t.get("live_hosts", []), "api.live_hosts")),
        live_allow_networks=tuple(networks),
        header_timeout_s=number(t.get("header_timeout_s", 10.0), "api.header_timeout_s", 0.1),
        body_timeout_s=number(t.get("body_timeout_s", 30.0), "api.body_timeout_s", 0.1),
        max_client_connections=integer(t.get("max_client_connections", 32),
                                    "api.max_client_connections", 1),
    )  # fmt: skip


def metrics_config(t: Mapping[str, Any]) -> MetricsConfig:
    if t.get("listen") in (None, ""):
        return MetricsConfig()
    return MetricsConfig(parse_listen(t["listen"], "metrics.listen"))
