"""One suite over the node's `Ledger` interface, run on the real ledger (the protocol contracts on
the embedded EVM) and on the tests' in-memory fake: a test that swaps the fake in for speed relies
on exactly what is asserted here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chain.client import ProtocolParams
from events.crypto import LocalKeySigner, keccak256
from node.chain_ledger import ChainLedger
from node.ledger import Ledger
from payments.errors import RedemptionFailed, TicketAlreadyRedeemed
from payments.ticket import MAX_WIN_PROB, Ticket, rand_hash, sign_ticket
from tests.fake_ledger import FakeLedger

NAMES = (b"sender", b"orch", b"delegator", b"stranger")
SENDER, ORCH, DELEGATOR, STRANGER = (keccak256(b"ledger-suite/" + n) for n in NAMES)
FACE = 10**16
TOKEN = 10**18


def addr(key: bytes) -> bytes:
    return LocalKeySigner(key).address


@pytest.fixture(params=["embedded", "fake"])
def ledger(request: pytest.FixtureRequest) -> Iterator[Ledger]:
    if request.param == "embedded":
        params = ProtocolParams(round_length=10, pool_size=1)
        real = ChainLedger.embedded([SENDER, ORCH, DELEGATOR], params)
        assert real.kind.startswith("embedded EVM")
        yield real
    else:
        yield FakeLedger(pool_size=1)


def winning_ticket(ledger: Ledger, nonce: int, rand: int, face: int = FACE) -> Ticket:
    view = ledger.view()
    return Ticket(addr(ORCH), addr(SENDER), face, MAX_WIN_PROB, nonce, rand_hash(rand),
                  view.round, view.round_block_hash)  # fmt: skip


def test_a_fresh_ledger_is_in_an_initialized_round(ledger: Ledger) -> None:
    view = ledger.view()
    assert view.block >= 1 and view.round >= 1 and view.pool_size == 1
    assert ledger.sender_info(addr(SENDER), addr(ORCH)).deposit == 0
    assert ledger.paid(addr(ORCH)) == 0 and ledger.stake(addr(ORCH)) == 0


def test_funds_show_as_deposit_and_reserve_from_one_transaction(ledger: Ledger) -> None:
    deposit_log, reserve_log = ledger.fund(addr(SENDER), 10 * FACE, 3 * FACE)
    info = ledger.sender_info(addr(SENDER), addr(ORCH))
    assert (info.deposit, info.reserve, info.withdraw_round) == (10 * FACE, 3 * FACE, 0)
    assert deposit_log.tx_hash == reserve_log.tx_hash and len(deposit_log.tx_hash) == 32
    assert deposit_log.block_number == reserve_log.block_number >= 1
    assert deposit_log.log_index != reserve_log.log_index


def test_bonds_add_up_as_stake_and_as_the_delegators_bond(ledger: Ledger) -> None:
    before = ledger.view().block
    ledger.bond(addr(ORCH), addr(ORCH), 20 * TOKEN)  # a self-bond registers the orchestrator
    entry = ledger.bond(addr(DELEGATOR), addr(ORCH), 5 * TOKEN)
    assert entry.block_number > before and len(entry.block_hash) == 32
    assert ledger.stake(addr(ORCH)) == 25 * TOKEN
    assert ledger.bonded(addr(DELEGATOR)) == 5 * TOKEN
    assert ledger.bonded(addr(SENDER)) == 0


def test_mining_advances_the_block(ledger: Ledger) -> None:
    before = ledger.view().block
    ledger.mine(3)
    assert ledger.view().block >= before + 3


def test_a_winning_ticket_is_paid_once_and_bad_ones_fail(ledger: Ledger) -> None:
    ledger.fund(addr(SENDER), 10 * FACE, FACE)
    ledger.bond(addr(ORCH), addr(ORCH), 10 * TOKEN)
    ticket = winning_ticket(ledger, 1, 1234)
    sig = sign_ticket(LocalKeySigner(SENDER), ticket.hash())
    receipt = ledger.redeem(ticket, sig, 1234)
    assert len(receipt.tx_hash) == 32 and receipt.block_number >= 1
    assert ledger.paid(addr(ORCH)) == FACE
    assert ledger.sender_info(addr(SENDER), addr(ORCH)).deposit == 9 * FACE
    with pytest.raises(TicketAlreadyRedeemed):
        ledger.redeem(ticket, sig, 1234)
    other = winning_ticket(ledger, 2, 99)
    with pytest.raises(RedemptionFailed) as wrong_rand:
        ledger.redeem(other, sign_ticket(LocalKeySigner(SENDER), other.hash()), 98)
    with pytest.raises(RedemptionFailed) as wrong_signer:
        ledger.redeem(other, sign_ticket(LocalKeySigner(STRANGER), other.hash()), 99)
    assert not wrong_rand.value.retryable and not wrong_signer.value.retryable
    assert ledger.paid(addr(ORCH)) == FACE  # nothing more was paid


def test_an_address_that_is_no_active_orchestrator_has_no_reward(ledger: Ledger) -> None:
    assert ledger.reward(addr(DELEGATOR)) is None
