"""The values a node's config is made of, each parsed and checked with a ConfigError that names
the key and what is wrong: numbers with a floor, wei amounts, shares, paths relative to the
config file, addresses, libp2p peer ids, HOST:PORT listen addresses."""

from __future__ import annotations

import ipaddress
from fractions import Fraction
from pathlib import Path
from typing import Any

from events.crypto import parse_address
from p2p.addrs import is_peer_id


class ConfigError(Exception):
    """A configuration that cannot work; the message names the key and what is wrong."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def path_value(value: Any, base: Path, name: str) -> Path:
    if not isinstance(value, str | Path) or not str(value):
        raise ConfigError(f"{name} must be a path")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def number(value: Any, name: str, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ConfigError(f"{name} must be a number >= {minimum}, got {value!r}")
    return value


def integer(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def fraction(value: Any, name: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f'{name} must be an integer or a string like "1000" or "1/3"')
    try:
        result = Fraction(str(value).strip())
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"{name}: {value!r} is not a number") from None
    if result < 0:
        raise ConfigError(f"{name} must not be negative")
    return result


def wei(value: Any, name: str) -> int:
    amount = fraction(value, name)
    if amount.denominator != 1:
        raise ConfigError(f"{name} must be a whole number of wei, got {value!r}")
    return int(amount)


def strings(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name} must be a list of strings")
    return tuple(value)


def address(value: Any, name: str) -> bytes:
    try:
        return parse_address(value) if isinstance(value, str) else parse_address("")
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def peer_ids(value: Any, name: str) -> tuple[str, ...]:
    """libp2p peer ids (base58, as `castnet worker --print-peer-id` shows them)."""
    ids = strings(value, name)
    for text in ids:
        if not is_peer_id(text):
            raise ConfigError(f"{name}: {text!r} is not a libp2p peer id")
    return ids


def share(value: Any, name: str) -> float:
    share = number(value, name, 0.0)
    if share > 1:
        raise ConfigError(f"{name} is a share of segments, 0..1, got {value!r}")
    return float(share)


def parse_listen(text: Any, name: str = "api.listen") -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) with port 0..65535."""
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(f"{name} must be HOST:PORT, got {text!r}")
    host, _, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{name} must be HOST:PORT with a port 0..65535, got {text!r}")
    return host, int(port)
