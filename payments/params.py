"""Ticket params a recipient quotes to a sender, and how they are derived: the HMAC'd random
value behind recipient_rand_hash, the face value (gas-aware, capped by the sender's funds) and the
win probability that gives the required expected value."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from fractions import Fraction

from events.crypto import to_checksum
from payments.errors import InsufficientFunds, InvalidParams, format_wei
from payments.ticket import MAX_WIN_PROB, UINT256_LIMIT, ZERO_HASH, ticket_ev

SEED_LEN = 32


@dataclass(frozen=True, slots=True)
class TicketParams:
    """What a sender must put in its tickets to pay `recipient`, valid until `expiration_block`.
    `seed` lets the recipient re-derive recipient_rand statelessly; `price_per_pixel` is in wei."""

    recipient: bytes
    face_value: int
    win_prob: int
    recipient_rand_hash: bytes
    seed: bytes
    expiration_block: int
    price_per_pixel: Fraction
    creation_round: int = 0
    creation_round_block_hash: bytes = ZERO_HASH

    def ev(self) -> Fraction:
        return ticket_ev(self.face_value, self.win_prob)


@dataclass(frozen=True, slots=True)
class ParamsPolicy:
    """A recipient's terms: the EV it wants per ticket and how it sizes face values.

    Face value targets `redeem_gas * gas_price * tx_cost_multiplier` (at least `ev *
    ev_multiplier`), is capped by the sender's max float and `max_face_value` (0: no cap), and is
    refused below `redeem_gas * gas_price * min_tx_cost_multiplier` (redeeming would not pay)."""

    ev: Fraction
    redeem_gas: int
    tx_cost_multiplier: int = 100
    ev_multiplier: int = 100
    min_tx_cost_multiplier: Fraction = Fraction(2)
    max_face_value: int = 0
    validity_blocks: int = 40


def recipient_rand(
    secret: bytes,
    seed: bytes,
    sender: bytes,
    face_value: int,
    win_prob: int,
    expiration_block: int,
    price_per_pixel: Fraction,
    creation_round: int,
    creation_round_block_hash: bytes,
) -> int:
    """HMAC-SHA256 of the recipient's secret over the seed and every params field, so params are
    self-authenticating: any change to them changes the rand and breaks its hash.

    Fields are fixed-width (unlike Livepeer's minimal big-endian bytes, which are ambiguous)."""
    if len(seed) != SEED_LEN:
        raise InvalidParams(f"a params seed has {SEED_LEN} bytes, got {len(seed)}")
    num, den = price_per_pixel.numerator, price_per_pixel.denominator
    for name, value in (
        ("face_value", face_value),
        ("win_prob", win_prob),
        ("expiration_block", expiration_block),
        ("price_per_pixel numerator", num),
        ("price_per_pixel denominator", den),
        ("creation_round", creation_round),
    ):
        if not 0 <= value < UINT256_LIMIT:
            raise InvalidParams(f"{name} must fit a uint256, got {value}")
    message = b"".join(
        (
            seed,
            sender,
            face_value.to_bytes(32, "big"),
            win_prob.to_bytes(32, "big"),
            expiration_block.to_bytes(32, "big"),
            num.to_bytes(32, "big"),
            den.to_bytes(32, "big"),
            creation_round.to_bytes(32, "big"),
            creation_round_block_hash,
        )
    )
    return int.from_bytes(hmac.new(secret, message, hashlib.sha256).digest(), "big")


def win_prob_for(ev: Fraction, face_value: int) -> int:
    """The smallest win_prob with face_value * win_prob / 2**256 >= ev, capped at the uint256
    maximum (when face_value == ev the ticket then loses only on one hash value in 2**256)."""
    if face_value <= 0 or ev <= 0:
        return 0
    # ceil(ev * 2**256 / face_value) in integers
    win_prob = -(-(ev.numerator << 256) // (ev.denominator * face_value))
    return min(win_prob, MAX_WIN_PROB)


def _ceil(value: Fraction) -> int:
    return -(-value.numerator // value.denominator)


def face_value_for(policy: ParamsPolicy, sender: bytes, gas_price: int, max_float: int) -> int:
    """The face value to quote `sender`, or InsufficientFunds when its max float cannot carry a
    ticket that is both worth `policy.ev` and worth redeeming at this gas price."""
    tx_cost = policy.redeem_gas * gas_price
    face_value = tx_cost * policy.tx_cost_multiplier
    if face_value < policy.ev:
        face_value = _ceil(policy.ev * policy.ev_multiplier)
    face_value = min(face_value, max_float)
    if policy.max_face_value > 0:
        face_value = min(face_value, policy.max_face_value)
    who = to_checksum(sender)
    if face_value < policy.ev:
        raise InsufficientFunds(
            f"sender {who}: max float {max_float} wei cannot carry a ticket worth "
            f"{format_wei(policy.ev)} wei"
        )
    floor = _ceil(tx_cost * policy.min_tx_cost_multiplier)
    if face_value < floor:
        raise InsufficientFunds(
            f"sender {who}: face value {face_value} wei (max float {max_float} wei) is below the "
            f"redemption cost {tx_cost} wei x {policy.min_tx_cost_multiplier} = {floor} wei"
        )
    return face_value
