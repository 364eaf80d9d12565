"""Gas per protocol call and transactions/s on the embedded EVM (eth-tester on py-evm).

    .venv/bin/python bench/chain_bench.py [--tickets 50] [--json]

Baseline in the same run: a plain ETH transfer through the same client (the cheapest
transaction), so tx/s shows what the contracts cost over the client's own overhead."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chain.client import Chain, ProtocolParams, deploy_protocol
from events.crypto import LocalKeySigner, keccak256
from payments.ticket import MAX_WIN_PROB, Ticket, rand_hash, sign_ticket


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tickets", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    chain = Chain.embedded()
    protocol = deploy_protocol(chain, chain.dev_key, ProtocolParams(round_length=10_000))
    sender, recipient = keccak256(b"bench/sender"), keccak256(b"bench/recipient")
    s, r = LocalKeySigner(sender), LocalKeySigner(recipient)
    for key in (s, r):
        chain.transfer(chain.dev_key, key.address, 10**22)
    protocol.ensure_round(chain.dev_key)
    gas: dict[str, int] = {}
    receipt = protocol.fund_deposit_and_reserve(sender, 10**21, 10**20)
    gas["fundDepositAndReserve"] = receipt["gasUsed"]
    gas["fundDeposit"] = protocol.fund_deposit(sender, 10**18)["gasUsed"]
    view = protocol.view()
    redeem_s, transfer_s, redeem_gas = [], [], []
    for nonce in range(1, args.tickets + 1):
        t = Ticket(r.address, s.address, 10**16, MAX_WIN_PROB, nonce, rand_hash(nonce),
                   view.round, view.round_block_hash)  # fmt: skip
        sig = sign_ticket(s, t.hash())
        start = time.perf_counter()
        rec = protocol.redeem(recipient, t, sig, nonce)
        redeem_s.append(time.perf_counter() - start)
        redeem_gas.append(chain.w3.eth.get_transaction_receipt(rec.tx_hash)["gasUsed"])
        start = time.perf_counter()  # alternate with the baseline
        chain.transfer(chain.dev_key, r.address, 1)
        transfer_s.append(time.perf_counter() - start)
    gas["redeemWinningTicket (first, new storage)"] = redeem_gas[0]
    gas["redeemWinningTicket (median)"] = int(statistics.median(redeem_gas))
    gas["unlock"] = protocol.unlock(sender)["gasUsed"]
    result = {
        "backend": chain.kind,
        "gas": gas,
        "redeem_tx_per_s": 1 / statistics.median(redeem_s),
        "transfer_tx_per_s": 1 / statistics.median(transfer_s),
        "tickets": args.tickets,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['backend']}, {args.tickets} redemptions alternated with transfers, medians")
    for name, value in gas.items():
        print(f"  gas {name:42} {value:>9,}")
    print(f"  redeem tx/s {result['redeem_tx_per_s']:8.1f}   (plain transfer tx/s "
          f"{result['transfer_tx_per_s']:.1f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
