"""The contracts on the embedded EVM (eth-tester on py-evm) with real signed tickets from
payments/: the artifacts match the sources, winners are paid, and every forged, replayed,
losing, expired or mismatched ticket reverts with its own error; the reserve is shared when the
deposit is empty; funds are locked until the unlock period has passed."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from chain.client import Chain, Protocol, ProtocolParams, deploy_protocol
from chain.compile import ARTIFACTS, NAMES, artifact_text
from chain.errors import (
    AccountLocked,
    BadCreationRound,
    BadRecipientRand,
    BadTicketSignature,
    TicketExpired,
    TicketLost,
    TicketUsed,
)
from events.crypto import LocalKeySigner, keccak256
from payments.ticket import MAX_WIN_PROB, Ticket, is_winning, rand_hash, sign_ticket
from tests.conftest import reverted

ROUND = 10
SENDER, R1, R2 = (keccak256(b"chain-test/" + n) for n in (b"sender", b"r1", b"r2"))
FACE = 10**16


@pytest.mark.parametrize("name", NAMES)
def test_committed_artifacts_match_the_sources(name: str) -> None:
    committed = json.loads((ARTIFACTS / f"{name}.json").read_text())
    assert json.loads(artifact_text(name)) == committed


@pytest.fixture(scope="module")
def deployed(module_evm: Chain) -> tuple[Chain, Protocol]:
    """The contracts, deployed once per backend, with funded and registered recipients."""
    chain = module_evm
    protocol = deploy_protocol(chain, chain.dev_key, ProtocolParams(ROUND, 2, 2, 2))
    for key in (SENDER, R1, R2):
        chain.transfer(chain.dev_key, LocalKeySigner(key).address, 10**20)
    for key in (R1, R2):  # recipients are registered orchestrators; fees all theirs
        protocol.staking.transfer_tokens(chain.dev_key, LocalKeySigner(key).address, 10**18)
        protocol.staking.bond(key, 10**18, LocalKeySigner(key).address)
        protocol.staking.register(key, 0, 0)
    chain.mine(ROUND - chain.block_number() % ROUND - 1)  # the next round starts with the test
    protocol.ensure_round(chain.dev_key)
    return chain, protocol


@pytest.fixture
def world(deployed: tuple[Chain, Protocol]) -> Iterator[tuple[Chain, Protocol]]:
    """The freshly deployed world; what a test changes is undone after it."""
    with reverted(deployed[0]):
        yield deployed


def addr(key: bytes) -> bytes:
    return LocalKeySigner(key).address


def ticket(protocol: Protocol, recipient: bytes, nonce: int, rand: int, **kw: int) -> Ticket:
    view = protocol.view()
    fields = {"face_value": FACE, "win_prob": MAX_WIN_PROB, **kw}
    return Ticket(addr(recipient), addr(SENDER), fields["face_value"], fields["win_prob"], nonce,
                  rand_hash(rand), view.round, view.round_block_hash)  # fmt: skip


def earned(protocol: Protocol, recipient: bytes) -> int:
    """Fees the broker paid into bonding for `recipient`."""
    return protocol.staking.delegator(addr(recipient)).fees


def signed(t: Ticket, key: bytes = SENDER) -> bytes:
    return sign_ticket(LocalKeySigner(key), t.hash())


def test_ticket_hash_is_the_payments_hash(world: tuple[Chain, Protocol]) -> None:
    _, protocol = world
    t = ticket(protocol, R1, 7, 99)
    from chain.client import _ticket_tuple

    assert bytes(protocol.broker.functions.getTicketHash(_ticket_tuple(t)).call()) == t.hash()


def test_a_winner_is_paid_once_and_bad_tickets_revert(world: tuple[Chain, Protocol]) -> None:
    chain, protocol = world
    protocol.fund_deposit_and_reserve(SENDER, 10 * FACE, 0)
    t = ticket(protocol, R1, 1, 1234)
    sig = signed(t)
    receipt = protocol.redeem(R1, t, sig, 1234)
    gas = chain.w3.eth.get_transaction_receipt(receipt.tx_hash)["gasUsed"]
    assert gas <= 130_000  # the round's first fee also opens the orchestrator's epoch for it
    assert earned(protocol, R1) == FACE
    assert protocol.sender_info(addr(SENDER), addr(R1)).deposit == 9 * FACE
    with pytest.raises(TicketUsed):
        protocol.redeem(R1, t, sig, 1234)
    with pytest.raises(BadRecipientRand):
        protocol.redeem(R1, ticket(protocol, R1, 2, 5), signed(ticket(protocol, R1, 2, 5)), 6)
    forged = ticket(protocol, R1, 3, 7)
    with pytest.raises(BadTicketSignature):
        protocol.redeem(R1, forged, signed(forged, key=R2), 7)
    high_s = bytearray(signed(forged))
    s = int.from_bytes(high_s[32:64], "big")
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    high_s[32:64] = (n - s).to_bytes(32, "big")
    high_s[64] ^= 1  # 27 <-> 28: the same signature, malleated
    with pytest.raises(BadTicketSignature):
        protocol.redeem(R1, forged, bytes(high_s), 7)
    # a ticket that loses: find a rand whose win check fails at a small win probability
    rand = next(
        r
        for r in range(1, 1000)
        if not is_winning(signed(ticket(protocol, R1, 4, r, win_prob=2**200)), r, 2**200)
    )
    loser = ticket(protocol, R1, 4, rand, win_prob=2**200)
    with pytest.raises(TicketLost):
        protocol.redeem(R1, loser, signed(loser), rand)
    wrong_round = Ticket(t.recipient, t.sender, FACE, MAX_WIN_PROB, 5, rand_hash(8),
                         t.creation_round, keccak256(b"not the round's block"))  # fmt: skip
    with pytest.raises(BadCreationRound):
        protocol.redeem(R1, wrong_round, signed(wrong_round), 8)
    old = ticket(protocol, R1, 6, 9)
    chain.mine(2 * ROUND)
    protocol.ensure_round(chain.dev_key)
    with pytest.raises(TicketExpired):
        protocol.redeem(R1, old, signed(old), 9)


def test_reserve_is_shared_when_the_deposit_is_empty(world: tuple[Chain, Protocol]) -> None:
    _chain, protocol = world
    protocol.fund_deposit_and_reserve(SENDER, FACE // 2, 2 * FACE)  # pool of 2: FACE each
    paid = []
    for nonce, recipient in enumerate((R1, R1, R2), start=1):
        before = earned(protocol, recipient)
        t = ticket(protocol, recipient, nonce, 100 + nonce)
        protocol.redeem(recipient, t, signed(t), 100 + nonce)
        paid.append(earned(protocol, recipient) - before)
    # R1: half from the deposit + half from its reserve share, then the rest of its share;
    # R2 still gets its full share: R1 could not take more than half the reserve
    assert paid == [FACE, FACE // 2, FACE]
    info = protocol.sender_info(addr(SENDER), addr(R2))
    assert (info.deposit, info.reserve) == (0, 0)


def test_funds_stay_locked_until_the_unlock_period_ends(world: tuple[Chain, Protocol]) -> None:
    chain, protocol = world
    protocol.fund_deposit_and_reserve(SENDER, FACE, FACE)
    with pytest.raises(AccountLocked):
        protocol.withdraw(SENDER)  # not unlocking
    protocol.unlock(SENDER)
    with pytest.raises(AccountLocked):
        protocol.withdraw(SENDER)  # the period has not passed
    chain.mine(2 * ROUND)
    protocol.ensure_round(chain.dev_key)
    before = chain.balance(addr(SENDER))
    receipt = protocol.withdraw(SENDER)
    (withdrawal,) = protocol.broker.events.Withdrawal().process_receipt(receipt)
    assert (withdrawal["args"]["deposit"], withdrawal["args"]["reserve"]) == (FACE, FACE)
    cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert chain.balance(addr(SENDER)) - before == 2 * FACE - cost
    assert protocol.sender_info(addr(SENDER), addr(R1)).deposit == 0
