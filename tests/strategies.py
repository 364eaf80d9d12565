"""Hypothesis strategies for event bodies, built from each kind's field schema."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from events import fields as f
from events import kinds as k

_addr = st.binary(min_size=20, max_size=20)
_hash = st.binary(min_size=32, max_size=32)
_text = st.text(max_size=40)

BY_TAG: dict[str, st.SearchStrategy[Any]] = {
    "addr": _addr,
    "hash": _hash,
    "opt_hash": st.one_of(st.just(b""), _hash),
    "sig": st.binary(min_size=65, max_size=65),
    "u64": st.integers(0, 2**64 - 1),
    "u256": st.integers(0, 2**256 - 1),
    "text": _text,
    "bool": st.booleans(),
    "blob": st.binary(max_size=64),
    "texts": st.lists(_text, max_size=4).map(tuple),
    "addrs": st.lists(_addr, max_size=4).map(tuple),
    "hashes": st.lists(_hash, max_size=4).map(tuple),
}


def _fields(spec: tuple[f.Field, ...]) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.tuples(*(BY_TAG[fld.tag] for fld in spec))


@st.composite
def chain_observed(draw: st.DrawFn) -> k.ChainObserved:
    what = draw(st.sampled_from(sorted(k.CHAIN_ARGS)))
    args = draw(_fields(k.CHAIN_ARGS[what]))
    head = draw(st.tuples(BY_TAG["u64"], _hash, _hash, BY_TAG["u64"]))
    return k.ChainObserved(what, *head, args)


def body_of(cls: type[k.Body]) -> st.SearchStrategy[k.Body]:
    if cls is k.ChainObserved:
        return chain_observed()
    plain = tuple(fld for fld in cls.FIELDS)
    return _fields(plain).map(lambda values: cls(*values)).filter(_valid)


def _valid(body: k.Body) -> bool:
    try:
        body.check()
    except Exception:
        return False
    return True


any_body = st.one_of(*(body_of(cls) for cls in k.BODY_TYPES))
