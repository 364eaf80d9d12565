"""Field codecs for positional event bodies: each turns a msgpack value into a typed Python value
(checking it) and back. uint256 values travel as minimal big-endian bytes (msgpack ints stop
at 64 bits)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from events.errors import BodyError

MAX_TEXT = 1024
MAX_LIST = 256


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    decode: Callable[[Any], Any]
    encode: Callable[[Any], Any]
    tag: str  # the codec's name, for schema listings and property tests


def _check(ok: bool, what: str, value: Any) -> None:
    if not ok:
        shown = repr(value)
        raise BodyError(f"{what} expected, got {shown[:60]}")


def _uint_bits(bits: int) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    limit = 1 << bits

    def dec(v: Any) -> int:
        _check(type(v) is int and 0 <= v < limit, f"uint{bits}", v)
        return int(v)

    return dec, dec


def _dec_u256(v: Any) -> int:
    _check(type(v) is bytes and len(v) <= 32 and (not v or v[0] != 0), "minimal uint256 bytes", v)
    return int.from_bytes(v, "big")


def _enc_u256(v: int) -> bytes:
    if not 0 <= v < 1 << 256:
        raise BodyError(f"uint256 out of range: {v}")
    return v.to_bytes((v.bit_length() + 7) // 8, "big")


def _fixed_bytes(n: int, what: str) -> Callable[[Any], bytes]:
    def dec(v: Any) -> bytes:
        _check(type(v) is bytes and len(v) == n, what, v)
        return bytes(v)

    return dec


def _dec_opt_hash(v: Any) -> bytes:
    _check(type(v) is bytes and len(v) in (0, 32), "empty or 32-byte hash", v)
    return bytes(v)


def _dec_text(v: Any) -> str:
    _check(type(v) is str and len(v) <= MAX_TEXT, f"text of at most {MAX_TEXT} chars", v)
    return str(v)


def _dec_bool(v: Any) -> bool:
    _check(type(v) is bool, "bool", v)
    return bool(v)


def _dec_blob(v: Any) -> bytes:
    _check(type(v) is bytes, "bytes", v)
    return bytes(v)


def _list_of(item: Callable[[Any], Any], enc: Callable[[Any], Any]) -> tuple[Any, Any]:
    def dec(v: Any) -> tuple[Any, ...]:
        _check(type(v) is list and len(v) <= MAX_LIST, f"list of at most {MAX_LIST}", v)
        return tuple(item(x) for x in v)

    def encode(v: Any) -> list[Any]:
        return [enc(x) for x in v]

    return dec, encode


def _field(name: str, pair: tuple[Callable[[Any], Any], Callable[[Any], Any]], tag: str) -> Field:
    return Field(name, pair[0], pair[1], tag)


_ADDR = (_fixed_bytes(20, "20-byte address"), bytes)
_HASH = (_fixed_bytes(32, "32-byte hash"), bytes)


def addr(name: str) -> Field:
    return _field(name, _ADDR, "addr")


def hash32(name: str) -> Field:
    return _field(name, _HASH, "hash")


def opt_hash(name: str) -> Field:
    return Field(name, _dec_opt_hash, bytes, "opt_hash")


def sig65(name: str) -> Field:
    return Field(name, _fixed_bytes(65, "65-byte signature"), bytes, "sig")


def u64(name: str) -> Field:
    return _field(name, _uint_bits(64), "u64")


def u256(name: str) -> Field:
    return Field(name, _dec_u256, _enc_u256, "u256")


def text(name: str) -> Field:
    return Field(name, _dec_text, str, "text")


def flag(name: str) -> Field:
    return Field(name, _dec_bool, bool, "bool")


def blob(name: str) -> Field:
    return Field(name, _dec_blob, bytes, "blob")


def texts(name: str) -> Field:
    return _field(name, _list_of(_dec_text, str), "texts")


def addrs(name: str) -> Field:
    return _field(name, _list_of(_ADDR[0], bytes), "addrs")


def hashes(name: str) -> Field:
    return _field(name, _list_of(_HASH[0], bytes), "hashes")


def raw_list(name: str) -> Field:
    """An untyped list whose items are checked by the body itself."""

    def dec(v: Any) -> tuple[Any, ...]:
        _check(type(v) is list and len(v) <= MAX_LIST, "list", v)
        return tuple(v)

    return Field(name, dec, list, "raw")


__all__ = [
    "Field",
    "addr",
    "addrs",
    "blob",
    "flag",
    "hash32",
    "hashes",
    "opt_hash",
    "raw_list",
    "sig65",
    "text",
    "texts",
    "u64",
    "u256",
]
