"""One castnet process: a p2p node per role (own libp2p identity and SQLite log under
`DATA_DIR/ROLE/`, its own wallet key from a keystore), joined to each other and to the bootstrap
peers, plus the roles' services: the orchestrator (offers, quotes, jobs, tickets redeemed from a
durable queue), the gateway (HTTP API and job runner) and the delegator (its bond, observed into
its log). Run it with `await nursery.start(service.run)`; cancel it to stop (the gateway first
publishes its verdicts not yet summarized, within node.writer.LAST_SUMMARY_S). A restart resumes
from what the data dir holds: each role's hash chain, its winning tickets, the gateway's jobs."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from chain.errors import ChainError
from chain.watcher import CURSOR_FILE, ChainWatcher, ChainWatcherService, WatchConfig
from events import kinds as k
from events.crypto import LocalKeySigner, keccak256, to_checksum
from events.envelope import decode
from node.api.app import build_app
from node.api.guard import TOKEN_FILE, TokenFileError, load_or_create_token
from node.api.metrics import NodeMetrics
from node.api.ops import build_ops_app, metrics_route, node_routes, serve_app
from node.api.server import ApiServeError, GatewayApi, serve_api
from node.chain_ledger import ChainLedger
from node.config import NodeConfig
from node.errors import NO_CHAIN as NO_CHAIN
from node.errors import ServiceError as ServiceError
from node.gateway.job_book import JobBook
from node.gateway.jobs import JobRunner
from node.gateway.role import Gateway
from node.ledger import ChainLog, Ledger
from node.orchestrator.rewards import RewardCaller
from node.orchestrator.role import Orchestrator
from node.orchestrator.tickets import SqliteTicketStore
from node.writer import EventWriter
from p2p.node import P2PNode
from storage.errors import StoreClosed

log = logging.getLogger("castnet.service")
SERVICE_FILE = "service.json"


@dataclass(slots=True)
class RoleNode:
    role: str
    node: P2PNode
    signer: LocalKeySigner


def recipient_secret(private_key: bytes) -> bytes:
    """The orchestrator's ticket secret, derived from its wallet key so that it survives restarts
    (tickets issued under params quoted before a restart stay redeemable)."""
    return keccak256(b"castnet/recipient-secret/v1" + private_key)


def make_ledger(config: NodeConfig, keys: Mapping[str, bytes]) -> Ledger:
    """The protocol contracts on an in-process EVM (the roles' keys granted gas money and stake
    token there), or on a JSON-RPC chain (blocking)."""
    if config.ledger.kind == "embedded":
        return ChainLedger.embedded(keys.values())
    if config.ledger.kind != "rpc":
        raise ServiceError(NO_CHAIN)
    assert config.ledger.contracts is not None  # the config parser requires it
    try:
        return ChainLedger.connect(
            config.ledger.rpc_url, config.ledger.contracts, list(keys.values())
        )
    except ChainError as exc:
        raise ServiceError(f"ledger: {exc}") from None


def shifted_listen(addrs: tuple[str, ...], index: int) -> tuple[str, ...]:
    """The `index`-th role of a process listens on each configured TCP port + index (port 0
    stays 0: the OS picks)."""

    def shift(match: re.Match[str]) -> str:
        port = int(match[1])
        return f"/tcp/{port + index if port else 0}"

    return tuple(re.sub(r"/tcp/(\d+)", shift, a) for a in addrs)


class NodeService:
    """The roles of one process on their own p2p nodes; `keys` maps each role to its key."""

    def __init__(self, config: NodeConfig, keys: Mapping[str, bytes]) -> None:
        missing = [r for r in config.roles if r not in keys]
        if missing:
            raise ServiceError(f"no wallet key for role(s) {', '.join(missing)}")
        self.config = config
        self.keys = dict(keys)
        self.members: dict[str, RoleNode] = {}
        self.ledger: Ledger
        self.orchestrator: Orchestrator | None = None
        self.gateway: Gateway | None = None
        self.runner: JobRunner | None = None
        self.api_address: tuple[str, int] | None = None
        self.api_token = ""  # the token in force ("" when the config turned it off)
        self.api_token_file: Path | None = None  # where the node keeps the token it made
        self.api_token_created = False  # made on this start (the CLI prints it once)
        self.resumed_jobs = 0
        self._ticket_store: SqliteTicketStore | None = None
        self.rewards: RewardCaller | None = None
        self.watcher: ChainWatcherService | None = None
        self._delegator_writer: EventWriter | None = None
        self.metrics = NodeMetrics(self)
        self.metrics_address: tuple[str, int] | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        self.ledger = await trio.to_thread.run_sync(make_ledger, cfg, self.keys)
        started = False
        try:
            async with trio.open_nursery() as nursery:
                # once started, the roles are shielded from the cancellation that stops the
                # service until the gateway's last verdict summary is out (bounded)
                roles = trio.CancelScope()
                await nursery.start(self._run_roles, roles)
                task_status.started(self)
                started = True
                try:
                    await trio.sleep_forever()
                finally:
                    if self.gateway is not None:
                        await self.gateway.writer.publish_last_summaries()
                    roles.cancel()
        finally:
            if self._ticket_store is not None:
                self._ticket_store.close()
            if started:  # a failed start says why instead
                log.info("stopped")

    async def _run_roles(self, roles: trio.CancelScope, *, task_status: Any) -> None:
        cfg = self.config
        with roles:
            async with trio.open_nursery() as nursery:
                earlier: list[str] = []
                for index, role in enumerate(cfg.roles):
                    p2p = dataclasses.replace(
                        cfg.p2p,
                        listen=shifted_listen(cfg.p2p.listen, index),
                        bootstrap=(*cfg.p2p.bootstrap, *earlier),
                    )
                    node = P2PNode(cfg.role_dir(role), p2p)
                    await nursery.start(node.run)
                    self.members[role] = RoleNode(role, node, LocalKeySigner(self.keys[role]))
                    earlier.append(node.addrs[0])
                if "orchestrator" in self.members:
                    await self._start_orchestrator(nursery)
                if "delegator" in self.members:
                    await self._start_delegator()
                if "gateway" in self.members:
                    await self._start_gateway(nursery)
                if cfg.ledger.kind == "rpc":
                    await self._start_watcher(nursery)
                if cfg.metrics.listen is not None:
                    app = build_ops_app([metrics_route(self.metrics.render)])
                    self.metrics_address = await nursery.start(serve_app, app,
                                                               *cfg.metrics.listen)  # fmt: skip
                await trio.to_thread.run_sync(self._write_service_file)
                roles.shield = True
                task_status.started()

    # -- roles -----------------------------------------------------------------------------

    async def _start_orchestrator(self, nursery: trio.Nursery) -> None:
        member = self.members["orchestrator"]
        self._ticket_store = await trio.to_thread.run_sync(
            SqliteTicketStore.open_dir, self.config.role_dir("orchestrator")
        )
        self.orchestrator = Orchestrator(
            member.node,
            member.signer,
            self.ledger,
            self.config.orchestrator,
            secret=recipient_secret(self.keys["orchestrator"]),
            ticket_store=self._ticket_store,
        )
        if self.config.ledger.kind == "embedded":  # a fresh chain: bond and register ourselves
            await self._self_bond(member, self.orchestrator.writer)
        await nursery.start(self.orchestrator.run)
        if self.config.ledger.kind == "rpc":  # rewards exist only on the contracts
            self.rewards = RewardCaller(self.ledger, self.orchestrator.writer)
            await nursery.start(self.rewards.run)
        pending = self.orchestrator.pending_redemptions()
        if pending:
            log.info("resuming %d winning ticket(s) waiting for redemption", pending)
        nursery.start_soon(self._redeem_loop, self.orchestrator)

    async def _self_bond(self, member: RoleNode, writer: EventWriter) -> None:
        """On a fresh embedded chain our orchestrator bonds half of its granted stake token to
        itself (and so registers), so that it is active and delegators can bond to it. The first
        start logs the bond before the first Offer: it is the standing that nodes admitting by
        standing need to store and forward this orchestrator's events."""
        me = member.signer.address
        staking = self.ledger.protocol.staking

        def bond() -> tuple[ChainLog, int] | None:
            if staking.orchestrator(me).registered:
                return None
            amount = staking.token_balance(me) // 2
            return self.ledger.bond(me, me, amount), amount

        bonded = await trio.to_thread.run_sync(bond)
        if bonded is None:
            return
        log.info("orchestrator bonded to itself on the embedded chain")
        if not await trio.to_thread.run_sync(_observed_before, member, "bond"):
            chain_log, amount = bonded
            await writer.emit(_observed("bond", chain_log, me, me, amount))

    async def _redeem_loop(self, orchestrator: Orchestrator) -> None:
        while True:
            try:
                redeemed = await orchestrator.redeem_due()
                if redeemed:
                    log.info("redeemed %d winning ticket(s)", redeemed)
            except StoreClosed as exc:  # the node is stopping under the pass
                log.info("redemption pass cut short: %s", exc)
                return
            except Exception:  # a chain hiccup must not stop the node; retried next interval
                log.exception("redemption pass failed")
            await trio.sleep(self.config.redeem_interval_s)

    async def _start_gateway(self, nursery: trio.Nursery) -> None:
        cfg, member = self.config, self.members["gateway"]
        self.gateway = Gateway(member.node, member.signer, self.ledger, cfg.gateway)
        if cfg.ledger.kind == "embedded":
            await self._fund_own_gateway(member)
        nursery.start_soon(self._follow_log, self.gateway)
        book = await trio.to_thread.run_sync(JobBook, cfg.role_dir("gateway") / "jobs")
        self.runner = JobRunner(self.gateway, book, cfg.min_offers, retention=cfg.retention,
                                max_jobs=cfg.max_jobs)  # fmt: skip
        self.resumed_jobs = await nursery.start(self.runner.run)
        if cfg.api.enabled:
            api_cfg = cfg.api
            if api_cfg.require_token and not api_cfg.token:
                path = cfg.role_dir("gateway") / TOKEN_FILE
                try:
                    token, created = await trio.to_thread.run_sync(load_or_create_token, path)
                except TokenFileError as exc:
                    raise ServiceError(str(exc)) from None
                api_cfg = dataclasses.replace(api_cfg, token=token)
                self.api_token_file, self.api_token_created = path, created
            self.api_token = api_cfg.token
            api = GatewayApi(api_cfg, book, self.runner.enqueue, self.status,
                             cfg.gateway.profiles, self.runner.stop,
                             self.runner.queue_position)  # fmt: skip
            try:
                app = build_app(api, node_routes(self))  # + /metrics, the dashboard
                self.api_address = await nursery.start(partial(serve_api, api, app=app))
            except ApiServeError as exc:
                raise ServiceError(str(exc)) from None

    async def _start_watcher(self, nursery: trio.Nursery) -> None:
        """Follow the protocol contracts' logs into the log of one role of this process (the
        gateway's, else the delegator's, else the orchestrator's), as ChainObserved events."""
        if self.gateway is not None:
            role, writer = "gateway", self.gateway.writer
        elif "delegator" in self.members:
            role = "delegator"
            member = self.members[role]
            writer = self._delegator_writer or EventWriter(member.node, member.signer)
            self._delegator_writer = writer
        else:
            assert self.orchestrator is not None
            role, writer = "orchestrator", self.orchestrator.writer
        ledger = self.ledger
        assert isinstance(ledger, ChainLedger)
        start = _deployed_block(self.config.ledger.contracts)
        watcher = await trio.to_thread.run_sync(lambda: ChainWatcher(
            ledger.chain, ledger.protocol.addresses(),
            self.config.role_dir(role) / CURSOR_FILE, WatchConfig(start_block=start)))  # fmt: skip
        for body in await trio.to_thread.run_sync(_own_observations, self.members[role]):
            watcher.mark_appended(body)
        self.watcher = ChainWatcherService(watcher, writer.emit)
        await nursery.start(self.watcher.run)
        log.info("following the chain's protocol logs into the %s log from block %d", role, start)

    async def _follow_log(self, gateway: Gateway) -> None:
        """Keep the gateway's folded view current, so status shows the offers it holds."""
        while True:
            await gateway.view.refresh()
            await gateway.node.ingest.wait_changed()

    async def _fund_own_gateway(self, member: RoleNode) -> None:
        """The embedded chain starts fresh in every process: deposit for our gateway. The first
        start logs the deposit; a restart only restores it on the new chain (the log has it)."""
        deposit, reserve = self.config.ledger.deposit, self.config.ledger.reserve
        address = member.signer.address
        logs = await trio.to_thread.run_sync(self.ledger.fund, address, deposit, reserve)
        if await trio.to_thread.run_sync(_observed_before, member, "deposit"):
            return
        assert self.gateway is not None
        await self.gateway.writer.emit(_observed("deposit", logs[0], address, deposit))
        await self.gateway.writer.emit(_observed("reserve", logs[1], address, reserve))

    async def _start_delegator(self) -> None:
        """Bond once, observed into the delegator's own log; a restart finds the bond there (and
        only restores it on a fresh embedded chain)."""
        cfg, member = self.config.delegator, self.members["delegator"]
        if cfg.orchestrator is None or not cfg.amount:
            return
        me = member.signer.address
        if self.config.ledger.kind == "rpc":  # the chain knows; the watcher logs the Bond event
            if await trio.to_thread.run_sync(self.ledger.bonded, me):
                log.info("delegator already bonded on chain; not bonding again")
                return
            await trio.to_thread.run_sync(self.ledger.bond, me, cfg.orchestrator, cfg.amount)
            log.info("bonded %d wei to %s", cfg.amount, to_checksum(cfg.orchestrator))
            return
        bonded = await trio.to_thread.run_sync(_observed_before, member, "bond")
        chain_log = await trio.to_thread.run_sync(
            self.ledger.bond, me, cfg.orchestrator, cfg.amount
        )
        if bonded:  # a fresh embedded chain: restored there, already in the log
            return
        writer = self._delegator_writer = EventWriter(member.node, member.signer)
        await writer.emit(_observed("bond", chain_log, me, cfg.orchestrator, cfg.amount))
        log.info("bonded %d wei to %s", cfg.amount, to_checksum(cfg.orchestrator))

    # -- reporting -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A JSON-able summary (call in the trio thread)."""
        roles = {}
        for role, m in self.members.items():
            roles[role] = {
                "address": to_checksum(m.signer.address),
                "peer_id": m.node.peer_id,
                "addrs": list(m.node.addrs),
                "events": m.node.event_count(),
                "peers": len(m.node.connected_peers()),
            }
        out: dict[str, Any] = {"pid": os.getpid(), "network": self.config.p2p.network,
                               "ledger": self.config.ledger.kind, "roles": roles}  # fmt: skip
        if self.orchestrator is not None:
            s = self.orchestrator.stats
            out["orchestrator"] = {
                "jobs": s.jobs, "busy": s.busy, "refused": s.refused, "tickets": s.tickets,
                "won": s.won, "redeemed": s.redeemed, "redeemed_wei": s.redeemed_wei,
                "pending_redemptions": self.orchestrator.pending_redemptions(),
                "price_per_pixel": str(self.config.orchestrator.price_per_pixel),
                "rewarded_rounds": self.rewards.rewarded_rounds if self.rewards else [],
            }  # fmt: skip
            out["orchestrator"].update(worker_segments=s.worker_segments,
                local_segments=s.local_segments, worker_failures=s.worker_failures,
                workers=self.orchestrator.workers.summary())  # fmt: skip
        if self.gateway is not None:
            out["gateway"] = {
                "offers": len(self.gateway.view.state.offers),
                "verdicts": len(self.gateway.verdicts),
                "current_job": self.runner.current if self.runner else None,
                "running_jobs": list(self.runner.running) if self.runner else [],
                "queued_jobs": len(self.runner.queue) if self.runner else 0,
                "segments_in_flight": self.gateway.scheduler.in_flight,
                "resumed_jobs": self.resumed_jobs,
            }
        if self.watcher is not None:
            out["chain_watcher"] = {"emitted": self.watcher.emitted,
                                    "failures": self.watcher.failures,
                                    "reorgs": self.watcher.reorgs}  # fmt: skip
        if self.api_address is not None:
            out["api"] = "http://{}:{}".format(*self.api_address)
        if self.metrics_address is not None:
            out["metrics"] = "http://{}:{}/metrics".format(*self.metrics_address)
        return out

    def _write_service_file(self) -> None:
        """`DATA_DIR/service.json`: where this process can be reached (read by tests, testnets)."""
        info = {
            "pid": os.getpid(),
            "roles": {
                role: {"address": to_checksum(m.signer.address), "peer_id": m.node.peer_id,
                       "addrs": list(m.node.addrs)}
                for role, m in self.members.items()
            },
            "api": "http://{}:{}".format(*self.api_address) if self.api_address else None,
            "api_token_file": str(self.api_token_file) if self.api_token_file else None,
            "metrics": "http://{}:{}/metrics".format(*self.metrics_address)
            if self.metrics_address else None,
        }  # fmt: skip
        path = self.config.data_dir / SERVICE_FILE
        tmp = path.with_name(SERVICE_FILE + ".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, path)


def _deployed_block(contracts: Path | None) -> int:
    try:
        return int(json.loads(contracts.read_text()).get("deployed_block", 0)) if contracts else 0
    except (OSError, ValueError, TypeError):
        return 0


def _own_observations(member: RoleNode) -> list[k.ChainObserved]:
    """This role's own ChainObserved events (blocking), so the watcher does not log them again."""
    me, seq, found = member.signer.address, 0, []
    while True:
        raws = member.node.store.read_author(me, after_seq=seq)
        if not raws:
            return found
        for raw in raws:
            event = decode(raw)
            seq = event.seq
            body = k.read_body(event) if event.kind == k.ChainObserved.KIND else None
            if isinstance(body, k.ChainObserved):
                found.append(body)


def _observed_before(member: RoleNode, what: str) -> bool:
    """Whether this role's own log records a chain observation of kind `what` (blocking)."""
    me, seq = member.signer.address, 0
    while True:
        raws = member.node.store.read_author(me, after_seq=seq)
        if not raws:
            return False
        for raw in raws:
            event = decode(raw)
            seq = event.seq
            body = k.read_body(event) if event.kind == k.ChainObserved.KIND else None
            if isinstance(body, k.ChainObserved) and body.what == what:
                return True


def _observed(what: str, at: ChainLog, *args: object) -> k.ChainObserved:
    return k.ChainObserved(what, at.block_number, at.block_hash, at.tx_hash, at.log_index, args)
