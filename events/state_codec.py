"""State <-> bytes for snapshots: msgpack of positional rows (no pickle: a snapshot file may come
from elsewhere). Integers beyond 64 bits travel as ext type 1 (big-endian bytes)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import msgpack
from immutables import Map

from events import state as s
from events.errors import DecodeError

STATE_FORMAT = 3  # bump whenever State or the fold rules change: older snapshots are then refolded
_BIG = 1
_VALUE_TYPES: dict[str, type | None] = {
    "by_kind": None,
    "heads": s.Head,
    "offers": s.OfferState,
    "stakes": None,
    "delegations": s.Delegation,
    "funds": s.Funds,
    "jobs": s.Job,
    "tickets": s.TicketRecord,
    "ticket_nonces": None,
    "reputation": s.Reputation,
    "evidence": s.Evidence,
    "chain_seen": None,
    "violations": s.Violation,
    "minter": s.MinterRound,
    "minter_params": None,
    "reward_factors": None,
    "latest_factor": None,
    "delegation_base": None,
    "job_chains": s.JobChain,
    "summaries": None,
}


def _big(v: Any) -> Any:
    if type(v) is int and not -(2**63) <= v < 2**64:
        return msgpack.ExtType(_BIG, v.to_bytes((v.bit_length() + 8) // 8, "big", signed=True))
    return v


def _row(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return [_big(getattr(value, f.name)) for f in fields(value)]
    return _big(value)


def encode_state(state: s.State) -> bytes:
    out: list[Any] = [STATE_FORMAT, state.events, state.round]
    for name in _VALUE_TYPES:
        mapping: Map[Any, Any] = getattr(state, name)
        out.append(
            [[list(key) if type(key) is tuple else key, _row(v)] for key, v in mapping.items()]
        )
    return msgpack.packb(out, use_bin_type=True)


def _ext(code: int, data: bytes) -> Any:
    if code != _BIG:
        raise DecodeError(f"unknown ext type {code} in snapshot")
    return int.from_bytes(data, "big", signed=True)


def decode_state(data: bytes) -> s.State:
    try:
        # use_list=False: arrays come back as tuples, which is what keys and tuple fields are
        out = msgpack.unpackb(data, raw=False, ext_hook=_ext, strict_map_key=False, use_list=False)
        if out[0] != STATE_FORMAT:
            raise DecodeError(f"snapshot format {out[0]}, this code reads {STATE_FORMAT}")
        maps: dict[str, Map[Any, Any]] = {}
        for name, rows in zip(_VALUE_TYPES, out[3:], strict=True):
            cls = _VALUE_TYPES[name]
            maps[name] = Map((key, cls(*value)) for key, value in rows) if cls else Map(rows)
        return s.State(events=out[1], round=out[2], **maps)
    except DecodeError:
        raise
    except Exception as exc:  # any malformed snapshot is refolded from the log, never trusted
        raise DecodeError(f"unreadable snapshot: {exc}") from None
