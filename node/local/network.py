"""A whole castnet network in one process on 127.0.0.1: a gateway, N orchestrators and a delegator,
each a real P2PNode (own key, own SQLite log, libp2p host), wired in a full mesh, sharing one
ledger. Each member runs in its own cancel scope, so a test can kill one mid-job."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import trio

from chain.client import ProtocolParams
from events import kinds as k
from events.crypto import LocalKeySigner, keccak256
from node.chain_ledger import ChainLedger
from node.gateway.role import Gateway, GatewayConfig
from node.ledger import ChainLog, Ledger
from node.orchestrator.rewards import RewardCaller
from node.orchestrator.role import Orchestrator, OrchestratorConfig
from node.writer import EventWriter
from p2p.config import P2PConfig
from p2p.localnet import LOOPBACK, connect, full_mesh
from p2p.node import P2PNode, open_node

log = logging.getLogger("castnet.network")
TOKEN = 10**18


@dataclass(frozen=True, slots=True)
class OrchestratorPlan:
    config: OrchestratorConfig
    self_stake: int  # wei of stake token bonded by the orchestrator itself


@dataclass(frozen=True, slots=True)
class NetworkPlan:
    orchestrators: tuple[OrchestratorPlan, ...]
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    gateway_deposit: int = 10**18
    gateway_reserve: int = 10**18
    delegation: int = 5 * TOKEN  # the delegator bonds this to the first orchestrator
    seed: str = "castnet-demo"


@dataclass(slots=True)
class Member:
    name: str
    role: str
    node: P2PNode
    signer: LocalKeySigner
    scope: trio.CancelScope
    data_dir: Path
    alive: bool = True


@dataclass(slots=True)
class Network:
    ledger: Ledger
    gateway: Gateway
    orchestrators: list[Orchestrator]
    members: list[Member] = field(default_factory=list)
    rewarders: list[RewardCaller] = field(default_factory=list)  # one per orchestrator
    delegation: int = 0  # wei of stake the delegator bonded

    async def claim_rewards(self) -> int:
        """Every live orchestrator claims the current round's reward (if not yet); wei minted."""
        minted = 0
        for rewarder, member in zip(self.rewarders, self.members[1:-1], strict=True):
            if member.alive:
                minted += await rewarder.claim_once()
        return minted

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def live(self) -> list[Member]:
        return [m for m in self.members if m.alive]

    async def converge(self, timeout: float = 15.0) -> bool:
        """Wait until every live node holds the same network-wide events (gossip and sync caught
        up) and both parties of each job chain hold all of it (it goes to no one else)."""
        with trio.move_on_after(timeout):
            while True:
                live = self.live()
                chains: dict[bytes, list[int]] = {}
                for m in live:
                    for author in m.node.jobs.bindings:
                        chains.setdefault(author, []).append(m.node.ingest.heads.get(author, 0))
                heads = [{a: s for a, s in m.node.ingest.heads.items() if a not in chains}
                         for m in live]  # fmt: skip
                if all(h == heads[0] for h in heads) and all(
                    len(seqs) == 2 and seqs[0] == seqs[1] for seqs in chains.values()
                ):
                    return True
                await live[0].node.ingest.wait_changed() if _behind(live[0], heads) else (
                    await trio.sleep(0.05)  # another node is behind: its appends wake no one here
                )
        return False


def _behind(member: Member, heads: list[dict[bytes, int]]) -> bool:
    mine = member.node.ingest.heads
    return any(seq > mine.get(a, 0) for h in heads for a, seq in h.items())


def key_for(seed: str, name: str) -> bytes:
    return keccak256(f"{seed}/{name}".encode())


def embedded_ledger(plan: NetworkPlan, round_length: int = 20) -> ChainLedger:
    """The protocol contracts on a fresh in-process EVM, with every member of `plan` granted gas
    money and stake token there (blocking: deploys and funds in a few hundred milliseconds)."""
    count = len(plan.orchestrators)
    names = ["gateway", "delegator", *(f"orchestrator{i}" for i in range(count))]
    params = ProtocolParams(round_length=round_length, pool_size=max(1, count))
    return ChainLedger.embedded([key_for(plan.seed, name) for name in names], params)


async def _member(
    name: str, role: str, data_dir: Path, config: P2PConfig, seed: str, *, task_status: Any
) -> None:
    with trio.CancelScope() as scope:
        async with open_node(data_dir, config) as node:
            signer = LocalKeySigner(key_for(seed, name))
            task_status.started(Member(name, role, node, signer, scope, data_dir))
            await trio.sleep_forever()


@asynccontextmanager
async def open_network(
    base_dir: str | Path, plan: NetworkPlan, ledger: Ledger, p2p: P2PConfig | None = None
) -> AsyncIterator[Network]:
    """Start every member, mesh them, fund the gateway, bond stake, publish the offers, and wait
    until the gateway's log holds every offer."""
    base = Path(base_dir)
    config = dataclasses.replace(p2p or P2PConfig(), listen=(LOOPBACK,), sync_interval_s=2.0)
    names = ["gateway", *(f"orchestrator{i}" for i in range(len(plan.orchestrators))), "delegator"]
    async with trio.open_nursery() as nursery:
        members: list[Member] = []
        for name in names:
            role = name.rstrip("0123456789")
            members.append(await nursery.start(_member, name, role, base / name, config, plan.seed))
        await connect([m.node for m in members], full_mesh(len(members)))
        gw_member, delegator = members[0], members[-1]
        gateway = Gateway(gw_member.node, gw_member.signer, ledger, plan.gateway)
        orchestrators = []
        for member, oplan in zip(members[1:-1], plan.orchestrators, strict=True):
            orch = Orchestrator(member.node, member.signer, ledger, oplan.config,
                                on_die=_killer(member))  # fmt: skip
            await nursery.start(orch.run)
            orchestrators.append(orch)
        rewarders = [RewardCaller(ledger, orch.writer) for orch in orchestrators]
        net = Network(ledger, gateway, orchestrators, members, rewarders, plan.delegation)
        await _setup_chain(net, plan, delegator)
        await gateway.wait_for_offers(len(orchestrators))
        try:
            yield net
        finally:
            if gw_member.alive:  # its verdicts not yet summarized, before the nodes stop
                await gateway.writer.publish_last_summaries()
            nursery.cancel_scope.cancel()


def _killer(member: Member) -> Any:
    def kill() -> None:
        member.alive = False
        member.scope.cancel()

    return kill


async def _setup_chain(net: Network, plan: NetworkPlan, delegator: Member) -> None:
    """Deposit for the gateway, self-bonds and one delegation, each observed into the log by the
    delegator node (the demo's chain watcher); then the current round initialized."""
    ledger = net.ledger
    observer = EventWriter(delegator.node, delegator.signer)
    gw = net.gateway.address
    deposit_log, reserve_log = await trio.to_thread.run_sync(
        ledger.fund, gw, plan.gateway_deposit, plan.gateway_reserve
    )
    await observer.emit(_observed("deposit", deposit_log, gw, plan.gateway_deposit))
    await observer.emit(_observed("reserve", reserve_log, gw, plan.gateway_reserve))
    bonds: list[tuple[bytes, bytes, int]] = [
        (o.address, o.address, p.self_stake)
        for o, p in zip(net.orchestrators, plan.orchestrators, strict=True)
    ]
    if plan.delegation and net.orchestrators:
        bonds.append((delegator.signer.address, net.orchestrators[0].address, plan.delegation))
    for who, to, amount in bonds:
        chain_log = await trio.to_thread.run_sync(ledger.bond, who, to, amount)
        await observer.emit(_observed("bond", chain_log, who, to, amount))
    # the setup's transactions may have moved the chain into a round nobody has initialized:
    # do it now, as a live network's round initializer does when each round starts, instead of
    # leaving it to the first job's first quote (a transaction on its critical path)
    await trio.to_thread.run_sync(ledger.view)


def _observed(what: str, at: ChainLog, *args: object) -> k.ChainObserved:
    return k.ChainObserved(what, at.block_number, at.block_hash, at.tx_hash, at.log_index, args)


def default_plan(
    count: int,
    gateway: GatewayConfig,
    faults: Sequence[str] = (),
    base_price: int = 1000,
    **orch: Any,
) -> NetworkPlan:
    """N orchestrators with different prices (wei/pixel: base, +25%, +50%, ...) and stakes;
    `faults[i]` for the i-th."""
    prices = [Fraction(base_price * (4 + i), 4) for i in range(count)]
    stakes = [(30 - 10 * (i % 3)) * TOKEN for i in range(count)]
    plans = tuple(
        OrchestratorPlan(
            OrchestratorConfig(
                price_per_pixel=prices[i], fault=faults[i] if i < len(faults) else "", **orch
            ),
            stakes[i],
        )
        for i in range(count)
    )
    return NetworkPlan(plans, gateway)
