"""The signed event envelope: `[schema_version, kind, author, seq, prev, time_ms, body, sig]`.

The stored and gossiped bytes are the msgpack encoding of that positional array, canonical (one byte
string per event) so nothing is ever re-encoded. `id = keccak256(DOMAIN_TAG ++ msgpack(first seven
fields))`, and `sig` is the author's secp256k1 signature over `id`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from events.crypto import (
    ADDRESS_LEN,
    SIGNATURE_LEN,
    SignatureError,
    Signer,
    keccak256,
    recover_address,
)
from events.errors import DecodeError, InvalidEvent

DOMAIN_TAG = b"castnet/event/v1\x00"
ID_LEN = 32
# Events are small records; bulk data (segments, renditions) travels as blobs referenced by hash.
MAX_EVENT_BYTES = 64 * 1024
MAX_TIME_MS = 2**53
# A canonical event ends with `sig` packed as bin8: 0xc4, 65, then 65 bytes.
_SIG_TAIL = 2 + SIGNATURE_LEN
_SIG_HEADER = bytes((0xC4, SIGNATURE_LEN))


def _refuse_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"msgpack extension type {code} is not allowed in events")


def unpack(data: bytes) -> Any:
    """Strict msgpack decoding: no ext types, bounded sizes, no trailing bytes."""
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            ext_hook=_refuse_ext,
        )
    except DecodeError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise DecodeError(f"not valid msgpack: {exc}") from None


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def event_id(unsigned_fields: bytes) -> bytes:
    return keccak256(DOMAIN_TAG + unsigned_fields)


@dataclass(frozen=True, slots=True)
class SignedEvent:
    """A decoded event together with the exact bytes that were signed and stored."""

    version: int
    kind: int
    author: bytes
    seq: int
    prev: bytes
    time_ms: int
    body: Any
    sig: bytes
    id: bytes
    raw: bytes

    def verify(self) -> None:
        """Raise `InvalidEvent` unless `sig` over `id` recovers to `author`."""
        try:
            signer = recover_address(self.id, self.sig)
        except SignatureError as exc:
            raise InvalidEvent(f"event {self.id.hex()[:16]}: {exc}") from None
        if signer != self.author:
            raise InvalidEvent(
                f"event {self.id.hex()[:16]}: signed by 0x{signer.hex()}, not by its author "
                f"0x{self.author.hex()}"
            )


def decode(raw: bytes) -> SignedEvent:
    """Parse and structurally check an event; the signature is checked by `SignedEvent.verify`."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise DecodeError("an event is bytes")
    raw = bytes(raw)
    if len(raw) > MAX_EVENT_BYTES:
        raise DecodeError(f"event of {len(raw)} bytes exceeds the {MAX_EVENT_BYTES}-byte limit")
    fields = unpack(raw)
    if not isinstance(fields, list) or len(fields) != 8:
        raise DecodeError("an event is a msgpack array of 8 fields")
    version, kind, author, seq, prev, time_ms, body, sig = fields
    if type(version) is not int or not 0 < version < 2**16:
        raise DecodeError(f"bad schema version {version!r}")
    if type(kind) is not int or not 0 < kind < 2**16:
        raise DecodeError(f"bad kind {kind!r}")
    if type(author) is not bytes or len(author) != ADDRESS_LEN:
        raise DecodeError("author must be a 20-byte address")
    if type(seq) is not int or not 0 < seq < 2**63:
        raise DecodeError(f"bad seq {seq!r}")
    if type(prev) is not bytes or len(prev) != (0 if seq == 1 else ID_LEN):
        raise DecodeError("prev must be empty at seq 1 and a 32-byte id after")
    if type(time_ms) is not int or not 0 <= time_ms < MAX_TIME_MS:
        raise DecodeError(f"bad time_ms {time_ms!r}")
    if type(sig) is not bytes or len(sig) != SIGNATURE_LEN:
        raise DecodeError("sig must be 65 bytes")
    # Canonical form: re-encoding gives the same bytes, so an event has exactly one encoding
    # and the unsigned part is the stored prefix.
    if pack(fields) != raw:
        raise DecodeError("event is not canonically encoded")
    unsigned = b"\x97" + raw[1:-_SIG_TAIL]
    return SignedEvent(
        version, kind, author, seq, prev, time_ms, body, sig, event_id(unsigned), raw
    )


def decode_verified(raw: bytes) -> SignedEvent:
    event = decode(raw)
    event.verify()
    return event


def encode_unsigned(
    version: int, kind: int, author: bytes, seq: int, prev: bytes, time_ms: int, body: Any
) -> bytes:
    return pack([version, kind, author, seq, prev, time_ms, body])


def sign_event(
    signer: Signer,
    *,
    version: int,
    kind: int,
    seq: int,
    prev: bytes,
    time_ms: int,
    body: Any,
) -> SignedEvent:
    """Build, sign and return the event; `decode(result.raw)` gives it back identically."""
    unsigned = encode_unsigned(version, kind, signer.address, seq, prev, time_ms, body)
    if unsigned[0] != 0x97:
        raise InvalidEvent("unexpected envelope encoding")
    eid = event_id(unsigned)
    sig = signer.sign_hash(eid)
    raw = b"\x98" + unsigned[1:] + _SIG_HEADER + sig
    event = decode(raw)  # checks every field and the canonical form once, at the source
    if event.id != eid:
        raise InvalidEvent("event id mismatch after encoding")
    return event
