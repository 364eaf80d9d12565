"""The protocol contracts on a fresh anvil, for tests that run `castnet run` in several processes
(what a user runs across processes: `ledger.kind = "rpc"`): every key gets gas money and stake
token, gateways deposit, orchestrators bond to themselves; then anvil mines a block a second,
so ticket params expire and rounds turn as on a live chain."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from chain.anvil import Anvil, find_binary
from chain.client import Chain, ProtocolParams, deploy_protocol
from events.crypto import LocalKeySigner
from node.chain_ledger import ChainLedger

DEPOSIT = RESERVE = 10**18
SELF_BOND = 10 * 10**18
# a winning ticket must pay for its redemption gas (face value ~100x the gas cost: ~1e16 wei at
# 1 gwei), so prices are far above the node's defaults for a short test clip to pay for several
# winners (fees / face value), while one segment's payment stays under the gateway's limits
# (at most ~256 tickets, at most 1e17 wei of EV): pick the price for the ladder's pixels
GATEWAY_ECONOMICS = 'max_price_per_pixel = "1e11"\n'  # in [gateway]


# ticket params live this many blocks (1 s each here): the node's default, 5, is less than a
# busy 2-core machine can take from a quote to the orchestrator's check of the tickets (with
# several node processes and encodes competing for the cores); still short enough that winning
# tickets, redeemed once their params expired, are redeemed within a test
VALIDITY_BLOCKS = 12


def orchestrator_economics(price_per_pixel: str) -> str:
    """Lines for [orchestrator]: tickets worth 5e14 wei, at this price (wei per pixel)."""
    return (f'ticket_ev = "5e14"\nprice_per_pixel = "{price_per_pixel}"\n'
            f"validity_blocks = {VALIDITY_BLOCKS}\n")  # fmt: skip


@contextmanager
def protocol_on_anvil(
    folder: Path, gateways: Sequence[bytes], orchestrators: Sequence[bytes]
) -> Iterator[str]:
    """Yields the `[ledger]` section of a node config for these contracts (private keys in)."""
    find_binary()  # fails loudly: `make test` installs anvil (make testnet-deps)
    with Anvil.start() as node:
        chain = Chain.rpc(node.url, node.dev_key)
        protocol = deploy_protocol(
            chain, chain.dev_key, ProtocolParams(round_length=200)
        )  # tickets live 2 rounds
        ledger = ChainLedger(protocol, [*gateways, *orchestrators])
        for key in gateways:
            ledger.fund(LocalKeySigner(key).address, DEPOSIT, RESERVE)
        for key in orchestrators:
            address = LocalKeySigner(key).address
            ledger.bond(address, address, SELF_BOND)
        chain.w3.provider.make_request("evm_setIntervalMining", [1])  # type: ignore[arg-type]
        path = folder / "contracts.json"
        path.write_text(json.dumps({"contracts": protocol.addresses()}))
        yield f'[ledger]\nkind = "rpc"\nrpc_url = "{node.url}"\ncontracts = "{path}"\n'
