"""Payments benchmark on one core: castnet against a baseline measured in the same run.

  ticket hash/s       Ticket.hash() (hand-packed bytes, pysha3) vs eth_abi encode_packed + eth_utils
  tickets created/s   Sender.create_tickets (hash + coincurve sign) vs eth_abi hash + eth-account's
                      Account.sign_message
  tickets validated/s Recipient.receive (every check: recipient, sender, expiry, signature,
                      HMAC rand, replay, funds, win) vs the same checks with eth_abi hashing and
                      eth-account's Account.recover_message

Rounds alternate castnet and baseline; the table shows medians. Run:
`python bench/payments_bench.py [--tickets 3000] [--rounds 5]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eth_abi.packed import encode_packed
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak

from events.crypto import LocalKeySigner, keccak256
from payments.fakes import FakeChain, MemoryTicketStore
from payments.funds import available_funds
from payments.interfaces import ChainView
from payments.params import ParamsPolicy, TicketParams, recipient_rand
from payments.queue import QueueConfig, RedemptionQueue
from payments.recipient import Recipient
from payments.sender import Sender, SenderConfig
from payments.ticket import ZERO_HASH, SignedTicket, Ticket, ticket_ev

GATEWAY_KEY = keccak256(b"bench gateway")
SECRET = keccak256(b"bench secret")
NOW = ChainView(block=1000, round=10, round_block_hash=keccak256(b"r10"), gas_price=10**9)
TYPES_NO_AUX = ["address", "address", "uint256", "uint256", "uint256", "bytes32"]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def packed_hash(t: Ticket) -> bytes:
    """The ticket hash the way a web3-stack implementation would write it."""
    values: list[object] = [
        t.recipient,
        t.sender,
        t.face_value,
        t.win_prob,
        t.sender_nonce,
        t.recipient_rand_hash,
    ]
    if t.creation_round or t.creation_round_block_hash != ZERO_HASH:
        aux = encode_packed(["uint256", "bytes32"], [t.creation_round, t.creation_round_block_hash])
        return keccak(encode_packed([*TYPES_NO_AUX, "bytes"], [*values, aux]))
    return keccak(encode_packed(TYPES_NO_AUX, values))


class Setup:
    """A funded gateway and an orchestrator over the in-memory chain; fresh params per round."""

    def __init__(self) -> None:
        self.gateway = LocalKeySigner(GATEWAY_KEY)
        self.orchestrator = LocalKeySigner(keccak256(b"bench orchestrator"))
        self.chain = FakeChain()
        self.chain.fund(self.gateway.address, deposit=10**20, reserve=10**20)
        self.sender = Sender(
            self.gateway, SenderConfig(Fraction(10**15), Fraction(10**22)), self.chain
        )
        self.rounds = 0

    def recipient(self) -> Recipient:
        queue = RedemptionQueue(
            self.orchestrator.address,
            MemoryTicketStore(),
            self.chain,
            self.chain,
            QueueConfig(redeem_gas=100_000),
        )
        policy = ParamsPolicy(ev=Fraction(10**12), redeem_gas=100_000)
        # one rand for the whole round, so the nonce budget is raised beyond go-livepeer's 600
        return Recipient(
            self.orchestrator.address, SECRET, policy, self.chain, queue, max_nonces_per_rand=10**7
        )

    def params(self, recipient: Recipient) -> TicketParams:
        self.rounds += 1
        seed = keccak256(b"bench seed %d" % self.rounds)
        return recipient.ticket_params(self.gateway.address, Fraction(1, 1000), seed, NOW)


def castnet_create(setup: Setup, params: TicketParams, count: int) -> list[SignedTicket]:
    session = setup.sender.start_session(params)
    return setup.sender.create_tickets(session, count, NOW)


def baseline_create(params: TicketParams, count: int) -> list[SignedTicket]:
    account = Account.from_key(GATEWAY_KEY)
    sender = bytes.fromhex(account.address[2:])
    out = []
    for nonce in range(1, count + 1):
        t = Ticket(
            params.recipient,
            sender,
            params.face_value,
            params.win_prob,
            nonce,
            params.recipient_rand_hash,
            params.creation_round,
            params.creation_round_block_hash,
        )
        message = encode_defunct(primitive=packed_hash(t))
        sig = bytes(Account.sign_message(message, private_key=GATEWAY_KEY).signature)
        out.append(
            SignedTicket(t, sig, params.seed, params.expiration_block, params.price_per_pixel)
        )
    return out


def baseline_validate(address: bytes, chain: FakeChain, tickets: list[SignedTicket]) -> None:
    """The checks Recipient.receive makes, with eth_abi hashing and eth-account recovery."""
    seen: dict[bytes, set[int]] = {}
    for signed in tickets:
        t = signed.ticket
        assert t.recipient == address and t.sender != bytes(20)
        assert signed.expiration_block > NOW.block
        h = packed_hash(t)
        recovered = Account.recover_message(encode_defunct(primitive=h), signature=signed.sig)
        assert bytes.fromhex(recovered[2:]) == t.sender
        rand = recipient_rand(
            SECRET,
            signed.seed,
            t.sender,
            t.face_value,
            t.win_prob,
            signed.expiration_block,
            signed.price_per_pixel,
            t.creation_round,
            t.creation_round_block_hash,
        )
        assert keccak(rand.to_bytes(32, "big")) == t.recipient_rand_hash
        nonces = seen.setdefault(t.recipient_rand_hash, set())
        assert t.sender_nonce not in nonces
        info = chain.sender_info(t.sender, address)
        assert t.face_value <= available_funds(info, NOW.pool_size, 0)
        int.from_bytes(keccak(signed.sig + rand.to_bytes(32, "big")), "big") < t.win_prob  # noqa: B015
        nonces.add(t.sender_nonce)
        ticket_ev(t.face_value, t.win_prob)


def one_round(setup: Setup, count: int, samples: dict[str, list[float]]) -> None:
    """One timing of each metric, castnet then baseline, on fresh params and tickets."""
    recipient = setup.recipient()
    params = setup.params(recipient)
    ours: list[SignedTicket] = []
    theirs: list[SignedTicket] = []
    samples["cc"].append(timed(lambda: ours.extend(castnet_create(setup, params, count))))
    samples["cb"].append(timed(lambda: theirs.extend(baseline_create(params, count))))
    assert [t.sig for t in theirs] == [t.sig for t in ours]  # the same bytes both ways
    plain = [t.ticket for t in ours]
    samples["hc"].append(timed(lambda: [t.hash() for t in plain]))
    samples["hb"].append(timed(lambda: [packed_hash(t) for t in plain]))
    samples["vc"].append(timed(lambda: [recipient.receive(t, NOW) for t in ours]))
    address = setup.orchestrator.address
    samples["vb"].append(timed(lambda: baseline_validate(address, setup.chain, theirs)))


def run(count: int, rounds: int) -> list[tuple[str, float, float]]:
    setup = Setup()
    samples: dict[str, list[float]] = {k: [] for k in ("hc", "hb", "cc", "cb", "vc", "vb")}
    for _ in range(rounds):
        one_round(setup, count, samples)

    def per_s(key: str) -> float:
        return count / statistics.median(samples[key])

    return [
        ("ticket hash/s", per_s("hc"), per_s("hb")),
        ("tickets created/s", per_s("cc"), per_s("cb")),
        ("tickets validated/s", per_s("vc"), per_s("vb")),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=3000, help="tickets per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    rows = run(args.tickets, args.rounds)
    print(f"payments bench: {args.tickets} tickets x {args.rounds} rounds, one core, medians")
    print(f"{'metric':<22}{'castnet':>12}{'baseline':>12}{'speed-up':>10}")
    for name, ours, theirs in rows:
        print(f"{name:<22}{ours:>12,.0f}{theirs:>12,.0f}{ours / theirs:>9.1f}x")
    print("baseline: eth_abi encode_packed + eth_utils keccak; eth-account sign_message/recover")


if __name__ == "__main__":
    main()
