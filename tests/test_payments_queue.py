"""Redemption queue: only after the params expire, before the ticket does, only when it pays
more than the gas, retried on failure and never paid twice."""

from __future__ import annotations

from fractions import Fraction

from test_payments_world import GWEI, REDEEM_GAS, World, make_world

from payments.errors import RedemptionFailed
from payments.fakes import MemoryTicketStore
from payments.interfaces import RedemptionRecord, RedemptionState
from payments.queue import QueueConfig, RedemptionQueue
from payments.ticket import WinningTicket

# Quoted with gas at 0 and ev_multiplier 1: face value == EV == 10**16 wei, every ticket wins.
FACE = 10**16


def winners(count: int = 1, **world_args: object) -> tuple[World, list[WinningTicket]]:
    world = make_world(
        ev=Fraction(FACE),
        ev_multiplier=1,
        gas_price=0,
        max_ev=Fraction(FACE),
        **world_args,  # type: ignore[arg-type]
    )
    receipts = [world.recipient.receive(t, world.now) for t in world.tickets(count)]
    won = [r.winning for r in receipts if r.winning is not None]
    assert len(won) == count
    return world, won


def after_params_expire(world: World, gas_price: int = GWEI) -> None:
    world.advance(blocks=40, gas_price=gas_price)


def test_not_redeemed_while_its_params_are_live() -> None:
    """Redeeming reveals recipient_rand; a sender knowing it could send only losing tickets."""
    world, _ = winners()
    world.advance(blocks=39, gas_price=GWEI)
    assert world.queue.process(world.now) == []
    assert world.chain.redeem_calls == []
    world.advance(blocks=1)
    (record,) = world.queue.process(world.now)
    assert record.state is RedemptionState.REDEEMED
    assert record.tx_hash and record.redeemed_block == world.chain.block
    assert world.chain.paid[world.orchestrator.address] == FACE


def test_a_limited_pass_redeems_that_many_and_leaves_the_rest_due() -> None:
    """A node redeems one ticket per step, so a shutdown waits for one transaction, not all."""
    world, _ = winners(3)
    after_params_expire(world)
    steps = [world.queue.process(world.now, 1) for _ in range(4)]
    assert [len(s) for s in steps] == [1, 1, 1, 0]
    assert all(s[0].state is RedemptionState.REDEEMED for s in steps[:3])
    assert len({s[0].ticket_hash for s in steps[:3]}) == 3
    assert len(world.chain.redeem_calls) == 3


def test_only_redeemed_when_profitable_after_gas() -> None:
    world, (won,) = winners()
    break_even = FACE // REDEEM_GAS  # payout == cost: not profitable
    after_params_expire(world, gas_price=break_even)
    assert not world.queue.is_profitable(won, world.now)
    assert world.queue.process(world.now) == []
    assert world.chain.redeem_calls == []
    world.advance(blocks=1, gas_price=break_even - 1)
    (record,) = world.queue.process(world.now)
    assert record.state is RedemptionState.REDEEMED


def test_payout_is_capped_by_what_the_sender_can_still_pay() -> None:
    world, _ = winners(deposit=FACE, reserve=FACE)
    after_params_expire(world)
    cost = REDEEM_GAS * GWEI
    # another recipient drained the sender: deposit + reserve share now only pays the gas
    world.chain.fund(world.gateway.address, deposit=cost // 2 - FACE, reserve=cost // 2 - FACE)
    assert world.queue.process(world.now) == []
    world.chain.fund(world.gateway.address, deposit=1)
    assert [r.state for r in world.queue.process(world.now)] == [RedemptionState.REDEEMED]
    assert world.chain.paid[world.orchestrator.address] == cost + 1


def test_expired_ticket_is_dropped_without_touching_the_chain() -> None:
    world, _ = winners()
    world.advance(blocks=40, rounds=2, gas_price=GWEI)  # creation round + 2 <= current round
    (record,) = world.queue.process(world.now)
    assert record.state is RedemptionState.EXPIRED
    assert world.chain.redeem_calls == []
    assert world.queue.pending_face_value(world.gateway.address) == 0
    assert world.queue.process(world.now) == []


def test_last_round_before_expiry_still_redeems() -> None:
    world, _ = winners()
    world.advance(blocks=40, rounds=1, gas_price=GWEI)
    assert [r.state for r in world.queue.process(world.now)] == [RedemptionState.REDEEMED]


def test_failed_redemption_is_retried_after_the_backoff() -> None:
    world, _ = winners()
    after_params_expire(world)
    world.chain.fail_next(RedemptionFailed("rpc timeout"))
    (record,) = world.queue.process(world.now)
    assert record.state is RedemptionState.PENDING
    assert (record.attempts, record.last_error) == (1, "rpc timeout")
    assert record.retry_at_block == world.now.block + 1
    assert world.queue.process(world.now) == []  # backing off this block
    world.advance(blocks=1)
    (record,) = world.queue.process(world.now)
    assert (record.state, record.attempts) == (RedemptionState.REDEEMED, 2)
    assert world.chain.paid[world.orchestrator.address] == FACE


def test_non_retryable_failure_is_final() -> None:
    world, _ = winners()
    after_params_expire(world)
    world.chain.fail_next(RedemptionFailed("transaction reverted", retryable=False))
    (record,) = world.queue.process(world.now)
    assert record.state is RedemptionState.FAILED
    world.advance(blocks=5)
    assert world.queue.process(world.now) == []
    assert len(world.chain.redeem_calls) == 1


def test_never_redeemed_twice() -> None:
    world, won = winners(3)
    assert world.queue.add(won[0]) is False  # already stored by the recipient
    after_params_expire(world)
    for _ in range(5):
        world.queue.process(world.now)
        world.advance(blocks=1)
    assert len(world.chain.redeem_calls) == len(set(world.chain.redeem_calls)) == 3
    assert world.chain.paid[world.orchestrator.address] == 3 * FACE


def test_restart_after_an_unrecorded_redemption_does_not_pay_twice() -> None:
    """Crash between the chain paying and the store recording it: the chain's used-ticket check
    refuses the second redemption and the queue records the ticket as already redeemed."""
    world, (won,) = winners()
    stale = world.store.get(won.ticket.hash())
    assert stale is not None
    after_params_expire(world)
    world.queue.process(world.now)  # paid; pretend the store update was lost
    store = MemoryTicketStore()
    store.add(stale)
    config = QueueConfig(redeem_gas=REDEEM_GAS)
    queue = RedemptionQueue(world.orchestrator.address, store, world.chain, world.chain, config)
    assert queue.pending_face_value(world.gateway.address) == FACE  # rebuilt from the store
    (record,) = queue.process(world.now)
    assert record.state is RedemptionState.ALREADY_REDEEMED
    assert world.chain.paid[world.orchestrator.address] == FACE
    assert queue.pending_face_value(world.gateway.address) == 0


def test_pending_face_value_lowers_the_next_quote() -> None:
    world, _ = winners(2, reserve=3 * FACE, deposit=FACE)
    assert world.queue.pending_face_value(world.gateway.address) == 2 * FACE
    # max float: reserve 3 x FACE less 2 x FACE pending (deposit < 3 x pending) = FACE
    assert world.params(5).face_value == FACE
    after_params_expire(world, gas_price=0)
    world.queue.process(world.now)
    assert world.queue.pending_face_value(world.gateway.address) == 0


def test_records_survive_in_the_store_with_their_history() -> None:
    world, (won,) = winners()
    after_params_expire(world)
    world.queue.process(world.now)
    record = world.store.get(won.ticket.hash())
    assert isinstance(record, RedemptionRecord)
    assert record.state is RedemptionState.REDEEMED and record.winning == won
    assert world.store.pending() == []
