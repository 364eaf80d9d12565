"""Read-only views of a node for the dashboard: the network (offers, stake, reputation), stake
(active set, delegations, rewards and fees per round, unbonding), the recent log and its audit,
and a job's segments. Each view is plain JSON; amounts are wei as decimal strings with a `_text`
twin in units a person reads (`1.5 CAST`, `0.0021 ETH`).

The views fold the log of one of the process's roles (the gateway's when it runs one) into the
state (events.fold) and a digest of what the state does not keep (rewards and fees by round,
unbonds, the recent events), after the audit's checks (signature, hash chain) on each event;
all are caught up in a worker thread on each request, so the trio loop never blocks and a
request costs only the events appended since the last."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import trio

from events import kinds as k
from events.audit import AuditReport, ChainChecker, Problem, audit
from events.envelope import SignedEvent
from events.fold import apply
from events.state import EMPTY, State, Violation
from node.amounts import units
from node.jsonview import event_view

RECENT = 500  # events kept for the Log page
CHAIN_READ_S = 5.0


@dataclass(slots=True)
class Digest:
    """What the dashboard shows that the folded state does not keep."""

    round: int = 0
    rewards: dict[int, int] = field(default_factory=dict)  # round -> stake minted
    fees: dict[int, int] = field(default_factory=dict)  # round -> face value redeemed
    last_reward: dict[bytes, int] = field(default_factory=dict)  # orchestrator -> round
    unbonds: list[dict[str, Any]] = field(default_factory=list)
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))

    def add(self, position: int, event: SignedEvent) -> None:
        self.recent.append(event_view(event, position))
        body = _body(event)
        if isinstance(body, k.ChainObserved):
            args = body.args
            if body.what == "round":
                self.round = int(args[0])
            elif body.what == "reward":
                self.rewards[self.round] = self.rewards.get(self.round, 0) + int(args[1])
                self.last_reward[bytes(args[0])] = self.round
            elif body.what in ("unbond", "unbonded"):
                self.unbonds.append({"delegator": "0x" + bytes(args[0]).hex(),
                                     "orchestrator": "0x" + bytes(args[1]).hex(),
                                     **_wei("amount", int(args[2]), "CAST"),
                                     "block": body.block_number, "round": self.round})  # fmt: skip
        elif isinstance(body, k.TicketRedeemed):
            self.fees[self.round] = self.fees.get(self.round, 0) + body.face_value


def _body(event: SignedEvent) -> Any:
    try:
        return k.read_body(event)
    except Exception:  # a malformed body is the audit's to report; the views skip it
        return None


def _finding(finding: Problem | Violation) -> str:
    if isinstance(finding, Problem):
        return finding.describe()
    who = f"0x{finding.author.hex()} seq {finding.seq}"
    return f"{finding.kind} by {who}: {finding.rule}" + (
        f" - {finding.detail}" if finding.detail else ""
    )


def _wei(name: str, wei: int, unit: str) -> dict[str, Any]:
    return {name: str(wei), f"{name}_text": units(wei, unit)}


class NodeViews:
    """The views of a NodeService (node.service)."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.state: State = EMPTY
        self.digest = Digest()
        self.position = 0
        self.checker = ChainChecker(verify=True)
        self._lock = trio.Lock()

    def _member(self) -> Any:
        members = self.service.members
        return members.get("gateway") or next(iter(members.values()))

    def _catch_up(self) -> None:
        store = self._member().node.store
        for position, raw in store.read(after=self.position):
            event = self.checker.check(position, raw)  # None: recorded as an audit problem
            if event is not None:
                self.state = apply(self.state, event)
                self.digest.add(position, event)
            self.position = position

    async def refresh(self) -> State:
        async with self._lock:
            await trio.to_thread.run_sync(self._catch_up)
        return self.state

    async def _pool_size(self) -> int:
        ledger = getattr(self.service, "ledger", None)
        if ledger is None:
            return 0
        with trio.move_on_after(CHAIN_READ_S):
            view = await trio.to_thread.run_sync(ledger.view, abandon_on_cancel=True)
            return int(view.pool_size)
        return 0

    # -- views -----------------------------------------------------------------------------

    async def network(self) -> dict[str, Any]:
        state = await self.refresh()
        orchestrators = []
        for address, offer in state.offers.items():
            rep = state.reputation.get(address)
            verified = rep.verified if rep else 0
            price = offer.price_per_unit / max(offer.pixels_per_unit, 1)
            orchestrators.append({
                "address": "0x" + address.hex(),
                "peer_id": offer.peer_id,
                "price_per_pixel_wei": f"{price:.6g}",
                "capabilities": [c for c in offer.capabilities if not c.endswith(":warm")],
                "warm_models": [c.removesuffix(":warm") for c in offer.capabilities
                                if c.endswith(":warm")],
                "capacity": offer.capacity,
                **_wei("stake", state.stakes.get(address, 0), "CAST"),
                "reputation": {
                    "verified": verified,
                    "failed": rep.failed if rep else 0,
                    "mean_latency_ms": round(rep.latency_ms_total / verified) if verified else None,
                    "equivocations": rep.equivocations if rep else 0,
                },
                "last_reward_round": self.digest.last_reward.get(address),
            })  # fmt: skip
        orchestrators.sort(key=lambda o: (-int(o["stake"]), o["address"]))
        peers = {role: len(m.node.connected_peers()) for role, m in self.service.members.items()}
        return {"round": state.round, "events": state.events, "authors": len(state.heads),
                "peers": peers, "orchestrators": orchestrators}  # fmt: skip

    async def stake(self) -> dict[str, Any]:
        state = await self.refresh()
        pool = await self._pool_size()
        ranked = sorted(state.stakes.items(), key=lambda item: (-item[1], item[0]))
        total = sum(state.stakes.values())
        active = [{"address": "0x" + a.hex(), **_wei("stake", s, "CAST"),
                   "share": round(s / total, 4) if total else 0.0,
                   "active": pool == 0 or i < pool}
                  for i, (a, s) in enumerate(ranked)]  # fmt: skip
        delegations = [{"delegator": "0x" + d.hex(), "orchestrator": "0x" + g.orchestrator.hex(),
                        **_wei("amount", g.amount, "CAST")}
                       for d, g in state.delegations.items()]  # fmt: skip
        rounds = sorted(set(self.digest.rewards) | set(self.digest.fees))
        rewards, fees = self.digest.rewards, self.digest.fees
        per_round = [{"round": r, **_wei("rewards", rewards.get(r, 0), "CAST"),
                      **_wei("fees", fees.get(r, 0), "ETH")} for r in rounds]  # fmt: skip
        return {"round": state.round, "pool_size": pool, **_wei("total_stake", total, "CAST"),
                "orchestrators": active, "delegations": delegations, "rounds": per_round,
                "unbonding": list(self.digest.unbonds)}  # fmt: skip

    async def log(self, kind: str = "", author: str = "", limit: int = 100) -> dict[str, Any]:
        state = await self.refresh()
        author = author.lower()
        events = [e for e in reversed(self.digest.recent)
                  if (not kind or e["kind"] == kind)
                  and (not author or e["author"] == author)]  # fmt: skip
        authors = sorted("0x" + a.hex() for a in state.heads)
        return {"events": events[:limit], "total": state.events,
                "kinds": sorted(state.by_kind), "authors": authors}  # fmt: skip

    async def audit(self) -> dict[str, Any]:
        """The audit of the whole log (signatures, hash chains, the fold's rules), checked
        incrementally as the views catch up, plus the conflicting events the store kept aside:
        `intact` when nothing is wrong with the log itself, `evidence` for the misconduct of
        other authors it records (events.audit.AuditReport.integrity / evidence)."""
        store = self._member().node.store
        async with self._lock:
            await trio.to_thread.run_sync(self._catch_up)
            kept = await trio.to_thread.run_sync(
                lambda: audit((), [(c.raw, c.other_id) for c in store.conflicts()])
            )
            report = AuditReport(self.checker.seen, self.checker.authors,
                                 (*self.checker.problems, *kept.problems),
                                 tuple(self.state.violation_list()), self.state)  # fmt: skip
        own = {m.signer.address for m in self.service.members.values()}
        damage, evidence = report.integrity(own), report.evidence(own)
        return {"clean": report.clean, "intact": not damage, "events": report.events,
                "authors": report.authors, "problems": [_finding(f) for f in damage[:20]],
                "evidence": [_finding(f) for f in evidence[:20]],
                "position": self.position}  # fmt: skip

    def segments(self, job_id: str) -> dict[str, Any] | None:
        runner = getattr(self.service, "runner", None)
        if runner is None:
            return None
        record = runner.book.get(job_id)
        if record is None:
            return None
        done = runner.segments.get(job_id, {})
        return {"id": job_id, "status": record.status, "total": record.segments_total,
                "segments": [done[s] for s in sorted(done)]}  # fmt: skip
