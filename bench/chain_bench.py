"""Gas of every protocol call, and transactions/s, on the embedded EVM and on anvil.

    .venv/bin/python bench/chain_bench.py [--backend embedded|anvil|both] [--tickets 50] [--json]

Baseline in the same run: a plain ETH transfer through the same client (the cheapest
transaction), alternated with the redemptions, so tx/s shows what the contracts cost over the
client's own overhead. Gas is deterministic; throughput is a median over the alternations."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chain.anvil import Anvil, find_binary
from chain.client import Chain, Protocol, ProtocolParams, deploy_protocol
from chain.errors import ChainError
from events.crypto import LocalKeySigner, keccak256
from payments.ticket import MAX_WIN_PROB, Ticket, rand_hash, sign_ticket

TOKEN = 10**18
ROUND = 50


def _next_round(chain: Chain, protocol: Protocol) -> Any:
    """Initialize the next round in its first block (returns the receipt)."""
    block = chain.block_number()
    chain.mine((block // ROUND + 1) * ROUND - block - 1)
    return protocol.initialize_round(chain.dev_key)


def measure(chain: Chain, tickets: int) -> dict[str, Any]:
    protocol = deploy_protocol(chain, chain.dev_key, ProtocolParams(round_length=ROUND))
    staking = protocol.staking
    keys = {n: keccak256(b"bench/" + n.encode()) for n in ("sender", "orch", "delegator")}
    addr = {n: LocalKeySigner(k).address for n, k in keys.items()}
    for name in keys:
        chain.transfer(chain.dev_key, addr[name], 10**21)
        staking.transfer_tokens(chain.dev_key, addr[name], 1_000 * TOKEN)
    gas: dict[str, int] = {}
    gas["initializeRound"] = _next_round(chain, protocol)["gasUsed"]
    gas["bond (self-bond, new orchestrator)"] = staking.bond(keys["orch"], 100 * TOKEN,
                                                             addr["orch"])["gasUsed"]  # fmt: skip
    gas["register"] = staking.register(keys["orch"], 100_000, 500_000)["gasUsed"]
    gas["bond (delegate, new delegator)"] = staking.bond(keys["delegator"], 50 * TOKEN,
                                                         addr["orch"])["gasUsed"]  # fmt: skip
    gas["fundDepositAndReserve"] = protocol.fund_deposit_and_reserve(keys["sender"], 10**20,
                                                                     10**19)["gasUsed"]  # fmt: skip
    gas["fundDeposit"] = protocol.fund_deposit(keys["sender"], 10**18)["gasUsed"]
    gas["fundReserve"] = protocol.fund_reserve(keys["sender"], 10**18)["gasUsed"]
    _next_round(chain, protocol)
    gas["reward"] = staking.reward(keys["orch"])["gasUsed"]

    view = protocol.view()
    signer = LocalKeySigner(keys["sender"])
    redeem_s, transfer_s, redeem_gas = [], [], []
    for nonce in range(1, tickets + 1):
        if chain.block_number() % ROUND > ROUND - 4:  # keep the round from turning mid-run
            _next_round(chain, protocol)
            view = protocol.view()
        t = Ticket(addr["orch"], addr["sender"], 10**16, MAX_WIN_PROB, nonce, rand_hash(nonce),
                   view.round, view.round_block_hash)  # fmt: skip
        sig = sign_ticket(signer, t.hash())
        start = time.perf_counter()
        receipt = protocol.redeem(keys["orch"], t, sig, nonce)
        redeem_s.append(time.perf_counter() - start)
        redeem_gas.append(chain.w3.eth.get_transaction_receipt(receipt.tx_hash)["gasUsed"])
        start = time.perf_counter()  # alternate with the baseline
        chain.transfer(chain.dev_key, addr["delegator"], 1)
        transfer_s.append(time.perf_counter() - start)
    gas["redeemWinningTicket (first to a recipient)"] = redeem_gas[0]
    gas["redeemWinningTicket (median)"] = int(statistics.median(redeem_gas[1:] or redeem_gas))
    gas["redeemWinningTicket (max)"] = max(redeem_gas)
    unbond = staking.bonding.functions.unbond(10 * TOKEN)
    gas["unbond"] = protocol._tx(keys["delegator"], unbond, gas=1_000_000)["gasUsed"]
    gas["rebond"] = staking.rebond(keys["delegator"], 0)["gasUsed"]
    lock = staking.unbond(keys["delegator"], 5 * TOKEN)
    gas["withdrawFees"] = staking.withdraw_fees(keys["orch"])["gasUsed"]
    gas["unlock"] = protocol.unlock(keys["sender"])["gasUsed"]
    for _ in range(3):
        _next_round(chain, protocol)
    gas["withdrawStake"] = staking.withdraw_stake(keys["delegator"], lock)["gasUsed"]
    gas["withdraw (deposit and reserve)"] = protocol.withdraw(keys["sender"])["gasUsed"]
    return {
        "backend": chain.kind,
        "gas": gas,
        "redeem_tx_per_s": 1 / statistics.median(redeem_s),
        "transfer_tx_per_s": 1 / statistics.median(transfer_s),
        "tickets": tickets,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=("embedded", "anvil", "both"), default="both")
    parser.add_argument("--tickets", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    backends = ["embedded", "anvil"] if args.backend == "both" else [args.backend]
    results = []
    for backend in backends:
        if backend == "embedded":
            results.append(measure(Chain.embedded(), args.tickets))
            continue
        try:
            find_binary()
        except ChainError as exc:
            print(f"anvil skipped: {exc}", file=sys.stderr)
            continue
        with Anvil.start() as node:
            results.append(measure(Chain.rpc(node.url, node.dev_key), args.tickets))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    names = list(results[0]["gas"])
    print(f"{'gas':44}" + "".join(f"{r['backend'][:22]:>24}" for r in results))
    for name in names:
        print(f"  {name:42}" + "".join(f"{r['gas'][name]:>24,}" for r in results))
    print(f"{args.tickets} redemptions alternated with plain transfers, medians:")
    for r in results:
        print(f"  {r['backend']}: redeem {r['redeem_tx_per_s']:.1f} tx/s, "
              f"transfer {r['transfer_tx_per_s']:.1f} tx/s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
