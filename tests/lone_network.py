"""A gateway and one orchestrator with one slot, in this process, on the embedded EVM: the
smallest paid network, for tests of what happens between the two."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from fractions import Fraction
from pathlib import Path

from chain.client import ProtocolParams
from node.chain_ledger import ChainLedger
from node.gateway.role import GatewayConfig
from node.local.network import Network, default_plan, key_for, open_network

EV = Fraction(10**12)  # each ticket's expected value, wei


@asynccontextmanager
async def lone_orchestrator(base: Path) -> AsyncIterator[tuple[Network, ChainLedger]]:
    """The running network (its gateway has seen the orchestrator's offer) and its ledger."""
    gateway_cfg = GatewayConfig(profiles="144p", preset="ultrafast", job_timeout_s=120.0,
                                max_price_per_pixel=Fraction(10**4), max_ev=4 * EV)  # fmt: skip
    plan = default_plan(1, gateway_cfg, ("",), ticket_ev=EV, capacity=1)
    names = ["gateway", "delegator", "orchestrator0"]
    ledger = ChainLedger.embedded([key_for(plan.seed, n) for n in names],
                                  ProtocolParams(round_length=500, pool_size=2))  # fmt: skip
    async with open_network(base / "nodes", plan, ledger) as net:
        assert await net.gateway.wait_for_offers(1, 90.0) == 1
        yield net, ledger
