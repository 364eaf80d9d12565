"""The signed envelope: canonical encoding, ids, signatures compatible with eth-account, kinds."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from events import kinds as k
from events.author import Author
from events.crypto import SECP256K1_N, LocalKeySigner, SignatureError, recover_address
from events.envelope import DOMAIN_TAG, MAX_EVENT_BYTES, decode, decode_verified, pack, sign_event
from events.errors import BodyError, DecodeError, InvalidEvent
from tests.conftest import key
from tests.strategies import any_body

OFFER = k.Offer(900, 1, ("transcode:h264",), 4, "peer", ("/ip4/127.0.0.1/tcp/4001",))


def test_signature_matches_eth_account_and_recovers_author() -> None:
    signer = LocalKeySigner(key(1))
    event = Author(signer).sign(OFFER, 1_000)
    account = Account.from_key(key(1))
    assert event.author.hex() == account.address[2:].lower()
    # Same deterministic (RFC 6979) signature as eth-account over the raw id.
    theirs = Account.unsafe_sign_hash(event.id, key(1)).signature
    assert bytes(theirs) == event.sig
    assert Account._recover_hash(event.id, signature=event.sig) == account.address


def test_id_is_keccak_of_tagged_unsigned_envelope() -> None:
    from eth_utils import keccak

    event = Author(LocalKeySigner(key(2))).sign(OFFER, 5)
    unsigned = msgpack.packb(msgpack.unpackb(event.raw)[:7], use_bin_type=True)
    assert event.id == keccak(DOMAIN_TAG + unsigned)
    assert decode_verified(event.raw) == event


def test_chain_links_seq_and_prev() -> None:
    author = Author(LocalKeySigner(key(3)))
    first, second = author.sign(OFFER, 1), author.sign(k.OfferWithdrawn("maintenance"), 2)
    assert (first.seq, first.prev) == (1, b"")
    assert (second.seq, second.prev) == (2, first.id)


def test_high_s_twin_is_refused() -> None:
    event = Author(LocalKeySigner(key(4))).sign(OFFER, 1)
    r, s, v = event.sig[:32], int.from_bytes(event.sig[32:64], "big"), event.sig[64]
    twin = r + (SECP256K1_N - s).to_bytes(32, "big") + bytes((55 - v,))  # 27 <-> 28
    with pytest.raises(SignatureError, match="high"):
        recover_address(event.id, twin)
    tampered = event.raw[:-65] + twin
    with pytest.raises(InvalidEvent, match="high"):
        decode_verified(tampered)


def test_signature_by_someone_else_is_refused() -> None:
    honest = Author(LocalKeySigner(key(5))).sign(OFFER, 1)
    forger = LocalKeySigner(key(6))
    forged = honest.raw[:-65] + forger.sign_hash(honest.id)
    with pytest.raises(InvalidEvent, match="not by its author"):
        decode_verified(forged)


def test_non_canonical_encoding_is_refused() -> None:
    event = Author(LocalKeySigner(key(7))).sign(OFFER, 1)
    fields = msgpack.unpackb(event.raw)
    # time_ms = 1 written as a uint64 instead of a fixint: same value, another encoding.
    head = pack(fields[:5])[1:]
    odd = b"\x98" + head + b"\xcf" + (1).to_bytes(8, "big") + pack(fields[6])[0:] + pack(fields[7])
    assert msgpack.unpackb(odd) == fields
    with pytest.raises(DecodeError, match="canonical"):
        decode(odd)


def test_oversized_event_is_refused() -> None:
    with pytest.raises(DecodeError, match="limit"):
        decode(b"\x00" * (MAX_EVENT_BYTES + 1))


def test_envelope_field_rules() -> None:
    signer = LocalKeySigner(key(8))
    with pytest.raises(DecodeError, match="prev"):
        sign_event(signer, version=1, kind=2, seq=2, prev=b"", time_ms=0, body=["x"])
    with pytest.raises(DecodeError, match="seq"):
        sign_event(signer, version=1, kind=2, seq=0, prev=b"", time_ms=0, body=["x"])


@settings(max_examples=300, deadline=None)
@given(any_body)
def test_every_kind_round_trips(body: k.Body) -> None:
    author = Author(LocalKeySigner(key(9)))
    event = author.sign(body, 1234)
    again = decode_verified(event.raw)
    assert again == event
    assert k.read_body(again) == body


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):  # anything else fails the test
        decode(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_events_raise_only_event_errors(data: st.DataObject) -> None:
    event = Author(LocalKeySigner(key(10))).sign(data.draw(any_body), 1)
    raw = bytearray(event.raw)
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= data.draw(st.integers(1, 255))
    try:
        decode_verified(bytes(raw))
    except (DecodeError, InvalidEvent):
        return
    raise AssertionError("a changed byte must not verify")


def test_malformed_body_of_known_kind() -> None:
    signer = LocalKeySigner(key(11))
    event = sign_event(
        signer,
        version=1,
        kind=k.JobClaimed.KIND,
        seq=1,
        prev=b"",
        time_ms=0,
        body=[b"short", b"", 1],
    )
    with pytest.raises(BodyError, match="32-byte hash"):
        k.read_body(event)


def test_u256_must_be_minimal() -> None:
    with pytest.raises(BodyError, match="minimal"):
        k.JobClaimed.from_wire([bytes(32), b"\x00\x01", 1])


def test_old_offer_version_is_upcast_on_read() -> None:
    signer = LocalKeySigner(key(12))
    v1 = sign_event(
        signer,
        version=1,
        kind=k.Offer.KIND,
        seq=1,
        prev=b"",
        time_ms=0,
        body=[b"\x03\x84", 1, ["transcode:h264"], "peer", ["/ip4/1.2.3.4/tcp/1"]],
    )
    body = k.read_body(v1)
    assert body == k.Offer(900, 1, ("transcode:h264",), 1, "peer", ("/ip4/1.2.3.4/tcp/1",))
    assert decode(v1.raw).raw == v1.raw  # the stored bytes stay as signed


def test_unknown_kind_and_future_version_are_kept_unread() -> None:
    signer = LocalKeySigner(key(13))
    unknown = sign_event(signer, version=1, kind=999, seq=1, prev=b"", time_ms=0, body={"x": 1})
    future = sign_event(
        signer, version=9, kind=k.Offer.KIND, seq=2, prev=unknown.id, time_ms=0, body=["whatever"]
    )
    assert decode_verified(unknown.raw).body == {"x": 1}
    assert k.read_body(unknown) is None and k.read_body(future) is None
