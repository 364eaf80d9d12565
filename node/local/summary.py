"""What `castnet demo` reports: the JSON summary of a run (jobs, tickets, redemptions, rewards,
each node's audit) and its printed form."""

from __future__ import annotations

import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from events.crypto import to_checksum
from events.state import State
from node.amounts import readable
from node.audit.log import audit_path
from node.gateway.role import JobReport
from node.local.network import Network

if TYPE_CHECKING:
    from node.local.demo import DemoOptions

WIN_SCALE = 2**256  # win_prob / WIN_SCALE: the probability a ticket wins


def summary(
    net: Network,
    report: JobReport | None,
    options: DemoOptions,
    counts: dict[str, int],
    converged: bool,
    error: str,
) -> dict[str, Any]:
    segments = report.segments if report else []
    per_orch: dict[bytes, int] = {}
    for s in segments:
        if s.result is not None:
            per_orch[s.orchestrator] = per_orch.get(s.orchestrator, 0) + 1
    rejected = {v.orchestrator for v in net.gateway.verdicts if not v.accepted}
    orchestrators = []
    members = zip(net.orchestrators, net.members[1:-1], net.rewarders, strict=True)
    for orch, member, rewarder in members:
        orchestrators.append({
            "address": to_checksum(orch.address),
            "price_per_pixel": str(orch.config.price_per_pixel),
            "stake_wei": net.ledger.stake(orch.address),
            "reward_rounds": list(rewarder.rewarded_rounds),
            "segments": per_orch.get(orch.address, 0),
            "tickets_received": orch.stats.tickets,
            "tickets_won": orch.stats.won,
            "tickets_redeemed": orch.stats.redeemed,
            "paid_wei": net.ledger.paid(orch.address),
            "failed_verdicts": sum(1 for v in net.gateway.verdicts
                                   if v.orchestrator == orch.address and not v.accepted),
            "suspended": orch.address in net.gateway.selector.suspended(_now()),
            "fault": orch.config.fault,
            "alive": member.alive,
        })  # fmt: skip
    total = len(segments)
    completed = report.completed if report else 0
    won = sum(o.stats.won for o in net.orchestrators)
    return {
        "ok": not error and total > 0 and completed == total,
        "error": error,
        "input": str(options.input or "generated"),
        "profiles": options.profiles,
        "segments": {"total": total, "completed": completed, "failed": total - completed},
        "tickets": {
            "sent": report.tickets_sent if report else 0,
            "received": sum(o.stats.tickets for o in net.orchestrators),
            "won": won,
            "redeemed": sum(o.stats.redeemed for o in net.orchestrators),
            "pending": sum(o.pending_redemptions() for o in net.orchestrators),
        },
        "fees_wei": int(report.fees_wei) if report else 0,
        "rewards": _rewards(net),
        "delegator": {
            "address": to_checksum(net.members[-1].signer.address),
            "delegated_wei": net.delegation,
            "bonded_wei": net.ledger.bonded(net.members[-1].signer.address),
        },
        "ticket_ev_wei": int(report.ticket_ev_sent) if report else 0,
        "paid_wei": sum(net.ledger.paid(o.address) for o in net.orchestrators),
        "orchestrators": orchestrators,
        "rejected_orchestrators": [to_checksum(a) for a in sorted(rejected)],
        "events": counts,
        "converged": converged,
        "chain": getattr(net.ledger, "kind", type(net.ledger).__name__),
        "wall_s": round(report.wall_s, 3) if report else 0.0,
        "out": str(options.out),
    }


def ticket_terms(state: State) -> dict[str, Any]:
    """What the gateway's log says of its tickets: face values, win probability, and the number
    of winners to expect (the sum of the win probabilities)."""
    tickets = [t for t in state.tickets.values()]
    expected = sum((Fraction(t.win_prob, WIN_SCALE) for t in tickets), Fraction(0))
    return {
        "face_values_wei": sorted({t.face_value for t in tickets}),
        "win_probs": sorted({round(t.win_prob / WIN_SCALE, 6) for t in tickets}),
        "expected_won": round(float(expected), 3),
    }


def _rewards(net: Network) -> dict[str, Any]:
    """Minted stake, and per rewarded round the minter's inflation and bonding rate."""
    rounds = sorted({n for r in net.rewarders for n in r.rewarded_rounds})
    out: dict[str, Any] = {"minted_wei": sum(r.minted for r in net.rewarders), "rounds": rounds}
    minter = getattr(net.ledger, "minter", None)
    if minter is None:  # the in-memory ledger has no minter
        return out
    now = minter()
    out["target_bonding_rate_percent"] = now.target_bonding_rate / 10**7
    out["inflation_change_percent"] = now.inflation_change / 10**7
    out["per_round"] = [
        {
            "round": m.round,
            "inflation_percent": m.round_inflation / 10**7,
            "bonding_rate_percent": m.bonding_rate / 10**7,
            "mintable_wei": m.mintable,
            "minted_wei": m.minted,
            "active_stake_wei": m.active_stake,
        }
        for m in map(minter, rounds)
    ]
    delegated = net.delegation
    bonded = net.ledger.bonded(net.members[-1].signer.address)
    if delegated and rounds:
        growth = (bonded / delegated) ** (1 / len(rounds)) - 1
        out["delegator_growth_percent_per_round"] = round(100 * growth, 6)
    return out


def _now() -> float:
    return time.monotonic()


def audit(net: Network, data_dir: Path) -> dict[str, Any]:
    nodes = {}
    for member in net.members:
        report = audit_path(member.data_dir)
        nodes[member.name] = {
            "clean": report.clean,
            "events": report.events,
            "problems": [p.describe() for p in report.problems[:5]],
            "violations": [f"{v.kind}: {v.rule} {v.detail}" for v in report.violations[:5]],
        }
    return {"clean": all(n["clean"] for n in nodes.values()), "nodes": nodes}


def print_summary(summary: dict[str, Any], out: Any = sys.stdout) -> None:
    """The summary as a person reads it: a few aligned lines, amounts in ETH and CAST."""
    seg, tix = summary["segments"], summary["tickets"]
    rewards, delegator = summary["rewards"], summary["delegator"]
    faces = ", ".join(readable(f, "ETH") for f in tix.get("face_values_wei", [])) or "-"
    odds = ", ".join(_odds(p) for p in tix.get("win_probs", [])) or "-"
    rows = [
        ("chain", summary["chain"]),
        ("segments", f"{seg['completed']}/{seg['total']} completed, {seg['failed']} failed"),
        (
            "tickets",
            f"{tix['sent']} sent, {tix['won']} won, {tix['redeemed']} redeemed"
            f" ({tix.get('expected_won', 0):g} wins expected)",
        ),
        ("ticket terms", f"face value {faces}, wins {odds}"),
        ("fees owed", readable(summary["fees_wei"], "ETH")),
        ("ticket EV sent", readable(summary["ticket_ev_wei"], "ETH")),
        ("paid on chain", readable(summary["paid_wei"], "ETH")),
    ]
    if tix["sent"] and not tix["won"]:
        rows.append(
            (
                "",
                "no ticket won this time: tickets pay in expectation, not each time; the"
                " EV sent covers the fees, and winners are paid their face value",
            )
        )
    rows += [
        (
            "rewards",
            f"{readable(rewards['minted_wei'])} minted in rounds "
            f"{', '.join(map(str, rewards['rounds'])) or '-'}",
        ),
        (
            "delegator",
            f"bonded {readable(delegator['delegated_wei'])}, now "
            f"{readable(delegator['bonded_wei'])}",
        ),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value}" for label, value in rows]
    table = [("orchestrator", "price/pixel", "stake", "segments", "tickets", "won", "redeemed", "")]
    for o in summary["orchestrators"]:
        notes = " ".join(
            x
            for x in (
                "SUSPENDED" if o["suspended"] else "",
                f"fault={o['fault']}" if o["fault"] else "",
                "" if o["alive"] else "dead",
            )
            if x
        )
        price = readable(int(Fraction(o["price_per_pixel"])), "ETH")
        table.append(
            (
                o["address"],
                price,
                readable(o["stake_wei"]),
                str(o["segments"]),
                str(o["tickets_received"]),
                str(o["tickets_won"]),
                str(o["tickets_redeemed"]),
                notes,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines.append("")
    for row in table:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:-1], widths[1:-1], strict=True)
        ]
        lines.append(("  ".join(cells) + ("  " + row[-1] if row[-1] else "")).rstrip())
    lines.append("")
    audit = summary["audit"]
    for name, a in audit["nodes"].items():
        verdict = (
            "clean" if a["clean"] else "PROBLEMS: " + "; ".join(a["problems"] + a["violations"])
        )
        lines.append(f"{name:<{width}}  {a['events']} events, audit {verdict}")
    error = f"; error: {summary['error']}" if summary["error"] else ""
    verdict = "clean" if audit["clean"] else "NOT clean"
    lines.append(f"{'audit':<{width}}  {verdict}; output {summary['out']}/master.m3u8{error}")
    live = summary.get("live_ai")
    if live:
        lat = live["added_latency_s"]
        lines.append(f"{'live AI':<{width}}  {live['pipeline']} {live['options']}: "
                     f"{live['published']} segments published, {live['skipped']} skipped; "
                     f"added latency p50 {lat['p50']:.2f} s, p95 {lat['p95']:.2f} s per "
                     f"{lat['segment_s']:g} s segment")  # fmt: skip
        lines.append(f"{'styled HLS':<{width}}  {live['playlist']}")
    if summary.get("log_file"):
        lines.append(f"{'node logs':<{width}}  {summary['log_file']}")
    if summary.get("metrics_url"):
        lines.append(f"{'metrics':<{width}}  {summary['metrics_url']}")
    print("\n".join(lines), file=out)


def _odds(probability: float) -> str:
    """`1 in 5` for 0.2; `always` for 1."""
    if probability >= 1:
        return "always"
    return f"1 in {1 / probability:,.3g}" if probability > 0 else "never"
