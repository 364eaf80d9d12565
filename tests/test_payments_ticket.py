"""Ticket hash, signature and win rule against independent implementations (eth_abi packed
encoding, eth-account signing), so our bytes are the TicketBroker's bytes."""

from __future__ import annotations

import dataclasses

import pytest
from eth_abi.packed import encode_packed
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from events.crypto import SECP256K1_N, LocalKeySigner, recover_address
from payments.errors import InvalidSignature, InvalidTicket, MalleableSignature
from payments.ticket import (
    MAX_WIN_PROB,
    ZERO_HASH,
    Ticket,
    is_winning,
    rand_hash,
    sign_ticket,
    signed_message_digest,
    ticket_ev,
    verify_ticket_signature,
)

U256 = 2**256
RECIPIENT = bytes.fromhex("1111111111111111111111111111111111111111")
SENDER = bytes.fromhex("2222222222222222222222222222222222222222")
PRIVATE_KEY = keccak(b"castnet ticket test key")


def packed_hash(t: Ticket, with_aux: bool) -> bytes:
    """The Solidity `keccak256(abi.encodePacked(...))` of a ticket, via eth_abi."""
    types = ["address", "address", "uint256", "uint256", "uint256", "bytes32"]
    values: list[object] = [
        to_checksum_address(t.recipient),
        to_checksum_address(t.sender),
        t.face_value,
        t.win_prob,
        t.sender_nonce,
        t.recipient_rand_hash,
    ]
    if with_aux:
        aux = encode_packed(["uint256", "bytes32"], [t.creation_round, t.creation_round_block_hash])
        types.append("bytes")
        values.append(aux)
    return keccak(encode_packed(types, values))


def test_hash_of_all_zero_ticket_is_keccak_of_168_zero_bytes_without_aux_data() -> None:
    zero = Ticket(bytes(20), bytes(20), 0, 0, 0, ZERO_HASH)
    assert zero.aux_data() == b""
    assert zero.hash() == keccak(bytes(20 + 20 + 32 * 4)) == packed_hash(zero, with_aux=False)


def test_hash_of_nonzero_ticket_without_aux_data_matches_encode_packed() -> None:
    t = Ticket(RECIPIENT, SENDER, 10**16, U256 // 100, 7, keccak(b"rand"))
    assert t.hash() == packed_hash(t, with_aux=False)


@pytest.mark.parametrize(
    ("creation_round", "block_hash"),
    [(0, keccak(b"block")), (1234, ZERO_HASH), (2**64 - 1, keccak(b"block"))],
)
def test_hash_with_aux_data_when_either_round_field_is_set(
    creation_round: int, block_hash: bytes
) -> None:
    t = Ticket(
        RECIPIENT, SENDER, 1, MAX_WIN_PROB, 2**32 - 1, keccak(b"r"), creation_round, block_hash
    )
    assert len(t.aux_data()) == 64
    assert t.hash() == packed_hash(t, with_aux=True)
    assert t.hash() != packed_hash(t, with_aux=False)


def test_known_answer_literal() -> None:
    """A literal computed once with eth_abi: guards against both sides drifting together."""
    t = Ticket(RECIPIENT, SENDER, 10**18, U256 // 2, 1, keccak(b"rand"), 42, keccak(b"block 42"))
    assert t.hash() == packed_hash(t, with_aux=True)
    assert t.hash().hex() == KNOWN_HASH


KNOWN_HASH = "5dde412f0769d7ba81fac93918611bbab1d3215ce927a5a2b56809f2800b586c"


addresses = st.binary(min_size=20, max_size=20)
hashes = st.binary(min_size=32, max_size=32)
uint256 = st.integers(0, U256 - 1)


@settings(max_examples=300, deadline=None)
@given(addresses, addresses, uint256, uint256, uint256, hashes, uint256, hashes)
def test_hash_matches_encode_packed_for_any_fields(
    recipient: bytes,
    sender: bytes,
    face_value: int,
    win_prob: int,
    nonce: int,
    rand: bytes,
    creation_round: int,
    block_hash: bytes,
) -> None:
    t = Ticket(recipient, sender, face_value, win_prob, nonce, rand, creation_round, block_hash)
    with_aux = creation_round != 0 or block_hash != ZERO_HASH
    assert t.hash() == packed_hash(t, with_aux)


@pytest.mark.parametrize(
    "field_value",
    [
        {"recipient": bytes(19)},
        {"sender": "0x" + "22" * 20},
        {"face_value": -1},
        {"win_prob": U256},
        {"sender_nonce": True},
        {"recipient_rand_hash": bytes(31)},
        {"creation_round": U256},
        {"creation_round_block_hash": bytes(33)},
    ],
)
def test_malformed_fields_are_invalid_tickets(field_value: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "recipient": RECIPIENT,
        "sender": SENDER,
        "face_value": 1,
        "win_prob": 1,
        "sender_nonce": 1,
        "recipient_rand_hash": ZERO_HASH,
    }
    fields.update(field_value)
    with pytest.raises(InvalidTicket):
        Ticket(**fields)  # type: ignore[arg-type]


def eth_account_sig(ticket_hash: bytes) -> bytes:
    signed = Account.sign_message(encode_defunct(primitive=ticket_hash), private_key=PRIVATE_KEY)
    return bytes(signed.signature)


def test_eth_account_signature_verifies_and_recovers_the_sender() -> None:
    sender = bytes.fromhex(Account.from_key(PRIVATE_KEY).address[2:])
    t = Ticket(RECIPIENT, sender, 10**16, U256 // 100, 1, keccak(b"rand"), 3, keccak(b"b"))
    sig = eth_account_sig(t.hash())
    assert sig[64] in (27, 28)
    verify_ticket_signature(t.hash(), sig, sender)
    assert recover_address(signed_message_digest(t.hash()), sig) == sender


def test_our_signature_is_byte_identical_to_eth_accounts_and_recovers_there() -> None:
    signer = LocalKeySigner(PRIVATE_KEY)
    t = Ticket(RECIPIENT, signer.address, 5, 6, 7, keccak(b"rand"))
    sig = sign_ticket(signer, t.hash())
    assert sig == eth_account_sig(t.hash())  # both RFC 6979, low-s
    recovered = Account.recover_message(encode_defunct(primitive=t.hash()), signature=sig)
    assert bytes.fromhex(recovered[2:]) == signer.address


def test_tampered_ticket_fails_signature_check() -> None:
    signer = LocalKeySigner(PRIVATE_KEY)
    t = Ticket(RECIPIENT, signer.address, 5, 6, 7, keccak(b"rand"))
    sig = sign_ticket(signer, t.hash())
    tampered = dataclasses.replace(t, face_value=6)
    with pytest.raises(InvalidSignature, match="forged or tampered"):
        verify_ticket_signature(tampered.hash(), sig, signer.address)


def high_s_twin(sig: bytes) -> bytes:
    """The malleable twin (r, n - s, flipped v): also a valid ECDSA signature of the same digest."""
    s = int.from_bytes(sig[32:64], "big")
    return sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((55 - sig[64],))


def test_high_s_signature_is_refused_with_its_own_error() -> None:
    signer = LocalKeySigner(PRIVATE_KEY)
    t = Ticket(RECIPIENT, signer.address, 5, 6, 7, keccak(b"rand"))
    twin = high_s_twin(sign_ticket(signer, t.hash()))
    with pytest.raises(MalleableSignature):
        verify_ticket_signature(t.hash(), twin, signer.address)


@pytest.mark.parametrize(
    "sig", [b"", bytes(64), bytes(65), bytes(64) + b"\x1c", b"\x01" * 64 + b"\x00"]
)
def test_malformed_signatures_are_invalid(sig: bytes) -> None:
    with pytest.raises(InvalidSignature):
        verify_ticket_signature(keccak(b"x"), sig, SENDER)


def test_win_rule_matches_an_independent_computation_at_the_threshold() -> None:
    sig, rand = bytes(range(65)), 0xDEADBEEF
    value = int.from_bytes(keccak(sig + rand.to_bytes(32, "big")), "big")
    assert is_winning(sig, rand, value + 1)
    assert not is_winning(sig, rand, value)
    assert not is_winning(sig, rand, 0)
    assert rand_hash(rand) == keccak(encode_packed(["uint256"], [rand]))


def test_ev_is_exact() -> None:
    assert ticket_ev(10**18, U256 // 4) == 10**18 // 4
    assert ticket_ev(3, 1) == pytest.approx(3 / U256)
    assert ticket_ev(3, 1).denominator == U256
