"""A gateway paying an orchestrator end to end over the in-memory chain and store; the builder
here is shared by the other payments tests."""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

from events.crypto import LocalKeySigner, keccak256
from payments.fakes import FakeChain, MemoryTicketStore
from payments.interfaces import ChainView, RedemptionState
from payments.params import ParamsPolicy, TicketParams
from payments.queue import QueueConfig, RedemptionQueue
from payments.recipient import Recipient
from payments.sender import Sender, SenderConfig
from payments.ticket import SignedTicket

GWEI = 10**9
ETH = 10**18
REDEEM_GAS = 100_000
PRICE = Fraction(1, 1000)  # wei per pixel


def key(n: int) -> bytes:
    return keccak256(b"castnet-payments-test/%d" % n)


def seed(n: int) -> bytes:
    return keccak256(b"castnet-payments-seed/%d" % n)


@dataclass
class World:
    """A funded gateway (sender), an orchestrator (recipient) with a redemption queue, and the
    fake chain and store behind them; `now` is the chain as both last saw it."""

    gateway: LocalKeySigner
    orchestrator: LocalKeySigner
    chain: FakeChain
    store: MemoryTicketStore
    queue: RedemptionQueue
    recipient: Recipient
    sender: Sender
    now: ChainView

    def params(self, n: int = 0, price: Fraction = PRICE) -> TicketParams:
        return self.recipient.ticket_params(self.gateway.address, price, seed(n), self.now)

    def tickets(self, count: int, params: TicketParams | None = None) -> list[SignedTicket]:
        params = params or self.params()
        session = self.sender.start_session(params)
        return self.sender.create_tickets(session, count, self.now)

    def advance(self, blocks: int = 0, rounds: int = 0, gas_price: int | None = None) -> None:
        gas = self.now.gas_price if gas_price is None else gas_price
        self.now = replace(
            self.now, block=self.now.block + blocks, round=self.now.round + rounds, gas_price=gas
        )
        self.chain.block, self.chain.round = self.now.block, self.now.round


def make_world(
    ev: Fraction = Fraction(10**12),
    ev_multiplier: int = 100,
    deposit: int = ETH,
    reserve: int = ETH,
    gas_price: int = GWEI,
    max_nonces: int = 600,
    max_ev: Fraction = Fraction(10**15),
) -> World:
    gateway, orchestrator = LocalKeySigner(key(1)), LocalKeySigner(key(2))
    chain = FakeChain()
    chain.fund(gateway.address, deposit=deposit, reserve=reserve)
    store = MemoryTicketStore()
    queue = RedemptionQueue(
        orchestrator.address, store, chain, chain, QueueConfig(redeem_gas=REDEEM_GAS)
    )
    policy = ParamsPolicy(ev=ev, redeem_gas=REDEEM_GAS, ev_multiplier=ev_multiplier)
    recipient = Recipient(
        orchestrator.address, key(3), policy, chain, queue, max_nonces_per_rand=max_nonces
    )
    sender = Sender(gateway, SenderConfig(max_ev=max_ev, max_total_ev=max_ev * 10**4), chain)
    now = ChainView(
        block=1000, round=10, round_block_hash=keccak256(b"round 10"), gas_price=gas_price
    )
    chain.block, chain.round = now.block, now.round
    chain.round_block_hashes[now.round] = now.round_block_hash
    return World(gateway, orchestrator, chain, store, queue, recipient, sender, now)


def test_gateway_pays_orchestrator_and_winners_are_redeemed_after_params_expire() -> None:
    # gas 0 when quoting: face value = 100 x EV, so about one ticket in 100 wins
    world = make_world(gas_price=0)
    deposit_before = world.chain.sender_info(world.gateway.address, world.orchestrator.address)
    received = []
    for n in range(4):
        params = world.params(n)
        for signed in world.tickets(500, params):
            received.append(world.recipient.receive(signed, world.now))
    winners = [r.winning for r in received if r.winning is not None]
    assert winners, "with 2,000 tickets at p=1/100 some must win"
    assert world.queue.process(world.now) == []  # params still live: nothing revealed yet
    world.advance(blocks=40)
    changed = world.queue.process(world.now)
    assert [r.state for r in changed] == [RedemptionState.REDEEMED] * len(winners)
    face_total = sum(w.ticket.face_value for w in winners)
    assert world.chain.paid[world.orchestrator.address] == face_total
    after = world.chain.sender_info(world.gateway.address, world.orchestrator.address)
    assert deposit_before.deposit - after.deposit == face_total
    assert world.queue.pending_face_value(world.gateway.address) == 0
