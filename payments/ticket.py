"""The ticket, byte-compatible with Livepeer's TicketBroker: packed hash, Ethereum signed-message
signature, and the win rule `uint256(keccak256(sig ++ pad32(recipientRand))) < winProb`."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from events.crypto import (
    ADDRESS_LEN,
    SECP256K1_HALF_N,
    SIGNATURE_LEN,
    SignatureError,
    Signer,
    keccak256,
    recover_address,
    to_checksum,
)
from payments.errors import InvalidSignature, InvalidTicket, MalleableSignature

HASH_LEN = 32
ZERO_HASH = bytes(HASH_LEN)
UINT256_LIMIT = 1 << 256
# A ticket wins with probability win_prob / 2**256 (the hash it is compared with is uniform in
# [0, 2**256)); the largest win_prob a uint256 can hold is one short of certainty.
MAX_WIN_PROB = UINT256_LIMIT - 1
_SIGNED_MESSAGE_PREFIX = b"\x19Ethereum Signed Message:\n32"


def _check_uint256(name: str, value: int) -> None:
    if type(value) is not int or not 0 <= value < UINT256_LIMIT:
        raise InvalidTicket(f"{name} must be a uint256, got {value!r}")


def _check_bytes(name: str, value: bytes, length: int) -> None:
    if type(value) is not bytes or len(value) != length:
        raise InvalidTicket(f"{name} must be {length} bytes, got {value!r}")


@dataclass(frozen=True, slots=True)
class Ticket:
    """A lottery ticket from `sender` to `recipient`: pays `face_value` wei with probability
    `win_prob / 2**256`; `sender_nonce` makes each ticket for one `recipient_rand_hash` distinct."""

    recipient: bytes
    sender: bytes
    face_value: int
    win_prob: int
    sender_nonce: int
    recipient_rand_hash: bytes
    creation_round: int = 0
    creation_round_block_hash: bytes = ZERO_HASH

    def __post_init__(self) -> None:
        _check_bytes("recipient", self.recipient, ADDRESS_LEN)
        _check_bytes("sender", self.sender, ADDRESS_LEN)
        _check_uint256("face_value", self.face_value)
        _check_uint256("win_prob", self.win_prob)
        _check_uint256("sender_nonce", self.sender_nonce)
        _check_bytes("recipient_rand_hash", self.recipient_rand_hash, HASH_LEN)
        _check_uint256("creation_round", self.creation_round)
        _check_bytes("creation_round_block_hash", self.creation_round_block_hash, HASH_LEN)

    def aux_data(self) -> bytes:
        """pad32(creation_round) ++ block hash, or empty when both are zero (Livepeer's rule)."""
        if self.creation_round == 0 and self.creation_round_block_hash == ZERO_HASH:
            return b""
        return self.creation_round.to_bytes(32, "big") + self.creation_round_block_hash

    def hash(self) -> bytes:
        """keccak256 of the Solidity-packed fields, exactly as the TicketBroker computes it."""
        return keccak256(
            b"".join(
                (
                    self.recipient,
                    self.sender,
                    self.face_value.to_bytes(32, "big"),
                    self.win_prob.to_bytes(32, "big"),
                    self.sender_nonce.to_bytes(32, "big"),
                    self.recipient_rand_hash,
                    self.aux_data(),
                )
            )
        )

    def ev(self) -> Fraction:
        """Expected value in wei: face_value * win_prob / 2**256, exact."""
        return ticket_ev(self.face_value, self.win_prob)


@dataclass(frozen=True, slots=True)
class SignedTicket:
    """What a sender hands over: the ticket, its signature, and the params fields that are not in
    the ticket hash but that the recipient's HMAC covers (seed, expiration block, price)."""

    ticket: Ticket
    sig: bytes
    seed: bytes
    expiration_block: int
    price_per_pixel: Fraction


@dataclass(frozen=True, slots=True)
class WinningTicket:
    """A winning ticket with everything the chain needs to pay it, plus when its params expire
    (redeeming earlier would reveal recipient_rand while senders still use it)."""

    ticket: Ticket
    sig: bytes
    recipient_rand: int
    expiration_block: int

    @property
    def ticket_hash(self) -> bytes:
        return self.ticket.hash()


def ticket_ev(face_value: int, win_prob: int) -> Fraction:
    """Expected value in wei of a ticket with these fields, as an exact fraction."""
    return Fraction(face_value * win_prob, UINT256_LIMIT)


def signed_message_digest(ticket_hash: bytes) -> bytes:
    """The digest an Ethereum signed-message signature over a 32-byte ticket hash signs."""
    return keccak256(_SIGNED_MESSAGE_PREFIX + ticket_hash)


def sign_ticket(signer: Signer, ticket_hash: bytes) -> bytes:
    """The sender's 65-byte signature over a ticket hash (v in {27, 28})."""
    return signer.sign_hash(signed_message_digest(ticket_hash))


def verify_ticket_signature(ticket_hash: bytes, sig: bytes, sender: bytes) -> None:
    """Raise unless `sig` is a low-s signed-message signature by `sender` over `ticket_hash`."""
    if len(sig) != SIGNATURE_LEN:
        raise InvalidSignature(f"a ticket signature has 65 bytes, got {len(sig)}")
    if int.from_bytes(sig[32:64], "big") > SECP256K1_HALF_N:
        raise MalleableSignature("ticket signature has a high s value (EIP-2 malleable)")
    try:
        signer = recover_address(signed_message_digest(ticket_hash), sig)
    except SignatureError as exc:
        raise InvalidSignature(f"ticket signature is invalid: {exc}") from None
    if signer != sender:
        raise InvalidSignature(
            f"ticket {ticket_hash.hex()[:16]} is signed by {to_checksum(signer)}, "
            f"not by its sender {to_checksum(sender)} (forged or tampered)"
        )


def rand_hash(recipient_rand: int) -> bytes:
    """The commitment a recipient publishes for its random value: keccak256(pad32(rand))."""
    return keccak256(recipient_rand.to_bytes(32, "big"))


def is_winning(sig: bytes, recipient_rand: int, win_prob: int) -> bool:
    """The TicketBroker's win rule: uint256(keccak256(sig ++ pad32(recipient_rand))) < win_prob."""
    return int.from_bytes(keccak256(sig + recipient_rand.to_bytes(32, "big")), "big") < win_prob
