"""castnet events: the signed envelope, kinds, and the pure state fold (no I/O, no clock)."""

from events.author import Author
from events.crypto import LocalKeySigner, Signer, keccak256, recover_address
from events.envelope import SignedEvent, decode, decode_verified, sign_event
from events.errors import BodyError, DecodeError, EventError, InvalidEvent
from events.fold import apply, fold
from events.kinds import KINDS, Body, kind_name, read_body
from events.state import EMPTY, State

__all__ = [
    "EMPTY",
    "KINDS",
    "Author",
    "Body",
    "BodyError",
    "DecodeError",
    "EventError",
    "InvalidEvent",
    "LocalKeySigner",
    "SignedEvent",
    "Signer",
    "State",
    "apply",
    "decode",
    "decode_verified",
    "fold",
    "keccak256",
    "kind_name",
    "read_body",
    "recover_address",
    "sign_event",
]
