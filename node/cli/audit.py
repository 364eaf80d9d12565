"""`castnet audit`: a log's own integrity and the evidence it holds against other authors,
reported apart, with exit codes a health check can rely on."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from events.audit import AuditReport, Problem
from events.crypto import parse_address, to_checksum
from events.state import Violation
from node.amounts import readable
from node.audit.log import Completeness, audit_source
from node.cli.commands import command_help
from node.jsonview import jsonable, state_summary
from storage.errors import StorageError

AUDIT_EXIT_CODES = """exit codes:
  0  the log is intact: every stored byte, signature and chain verifies, nothing is missing
     (as far as a version-2 trailer tells), and the own authors broke no rule; evidence against
     other authors is reported but does not fail the audit
  1  the log itself is damaged or incomplete, an own author broke a rule, or (with --rpc) an
     event is not confirmed on chain
  2  usage or I/O error: bad arguments, no such file, not a data dir or castlog
  3  (with --strict) intact, but it holds evidence against other authors"""
EXIT_CLEAN, EXIT_DAMAGED, EXIT_USAGE, EXIT_EVIDENCE = 0, 1, 2, 3
KEYSTORE_NAME = "keystore.json"  # node.config's, without importing the node's config
PEER_DETAIL_LIMIT = 100  # behind/differs entries in --json
PEER_LINES = 5  # per peer, in the text report


def register(sub: Any) -> None:
    p = sub.add_parser(
        "audit",
        help=command_help("audit"),
        description="Verify every signature, every author's hash chain and, for a version-2"
        " .castlog, the signed trailer (nothing missing, added or altered); refold the log. The"
        " log's own integrity and the evidence it holds against other authors (equivocations,"
        " events that break a rule) are reported apart.",
        epilog=AUDIT_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", type=Path, help="DATA_DIR or FILE")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--own", action="append", default=[], metavar="ADDRESS",
                   help="an author whose misconduct counts as damage to this log, not evidence"
                   " (repeatable; default: the address of DATA_DIR/keystore.json)")  # fmt: skip
    p.add_argument(
        "--signer", metavar="ADDRESS", help="require a version-2 trailer signed by this address"
    )
    p.add_argument(
        "--strict", action="store_true", help="exit 3 when intact but holding evidence (see below)"
    )
    p.add_argument("--rpc", metavar="URL", help="also check ChainObserved events on this chain")
    p.add_argument("--contracts", type=Path, metavar="FILE",
                   help="the deployment file (with --rpc)")  # fmt: skip
    p.add_argument("--fetch", metavar="MULTIADDR",
                   help="first fetch into DATA_DIR, from this peer (/p2p/<id> included), its"
                   " network-wide events and the job chains of each --party: job chains are not"
                   " flooded, the parties hold them")  # fmt: skip
    p.add_argument("--party", action="append", default=[], metavar="ADDRESS",
                   help="with --fetch: whose job chains to fetch (repeatable)")  # fmt: skip
    p.add_argument("--network", default=None, help="with --fetch: the network id")
    p.set_defaults(run=cmd_audit)


def _fail(message: str) -> int:
    print(f"castnet: {message}", file=sys.stderr)
    return EXIT_USAGE


def cmd_audit(args: argparse.Namespace) -> int:
    try:
        own = {parse_address(a) for a in args.own}
        signer = parse_address(args.signer) if args.signer else None
        parties = [parse_address(a) for a in args.party]
    except ValueError as exc:
        return _fail(str(exc))
    if args.fetch:
        if not parties:
            return _fail("audit --fetch needs --party ADDRESS (whose job chains to fetch)")
        failed = _fetch(args, parties)
        if failed:
            return failed
    if not args.own and args.source.is_dir() and (args.source / KEYSTORE_NAME).exists():
        from node.keystore import KeystoreError, keystore_address  # eth-account: only here

        try:
            own.add(keystore_address(args.source / KEYSTORE_NAME))
        except (KeystoreError, ValueError) as exc:
            return _fail(f"audit: {exc}")
    try:
        report, completeness = audit_source(args.source, signer=signer)
    except StorageError as exc:
        print(f"castnet: audit failed: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if completeness.warning:
        print(f"castnet: warning: {completeness.warning}", file=sys.stderr)
    chain = None
    if args.rpc:
        if args.contracts is None:
            return _fail("audit --rpc needs --contracts FILE (the deployment file)")
        from chain.errors import ChainError  # web3: only when asked to check a chain
        from node.audit.chain import audit_chain

        try:
            chain = audit_chain(args.source, args.rpc, args.contracts)
        except ChainError as exc:
            return _fail(f"audit: {exc}")
    integrity, evidence = report.integrity(own), report.evidence(own)
    if integrity or (chain is not None and not chain.clean):
        code = EXIT_DAMAGED
    elif evidence and args.strict:
        code = EXIT_EVIDENCE
    else:
        code = EXIT_CLEAN
    if args.json:
        out = _audit_json(report, own, completeness)
        out["exit_code"] = code
        if chain is not None:
            out["chain"] = {"checked": chain.checked, "confirmed": chain.confirmed,
                            "problems": chain.problems}  # fmt: skip
        print(json.dumps(out))
    else:
        _print_audit(report, own, completeness)
        if chain is not None:
            for problem in chain.problems:
                print(f"chain: {problem}")
            verdict = "confirmed" if chain.clean else "NOT confirmed"
            print(f"chain: {chain.confirmed} of {chain.checked} events {verdict} on {args.rpc}")
    return code


def _fetch(args: argparse.Namespace, parties: list[bytes]) -> int:
    """Fill DATA_DIR from the peer; 0, or the usage exit code after saying why not."""
    import trio  # the network stack: only when asked to fetch

    from node.audit.fetch import fetch_party_log
    from p2p.config import DEFAULT_NETWORK, P2PConfig
    from p2p.errors import P2PError
    from p2p.host import quiet_libp2p

    quiet_libp2p()
    config = P2PConfig(network=args.network or DEFAULT_NETWORK)
    try:
        got = trio.run(fetch_party_log, args.source, args.fetch, parties, config)
    except (P2PError, trio.TooSlowError, StorageError, ValueError) as exc:
        return _fail(f"audit: fetching from {args.fetch} failed: {exc}")
    print(f"castnet: fetched {got.network_events} network-wide and {got.job_events} job chain"
          f" events ({got.job_chains} job chains) from {got.peer}", file=sys.stderr)  # fmt: skip
    return 0


def _finding(f: Problem | Violation) -> dict[str, Any]:
    if isinstance(f, Problem):
        return {
            "position": f.position,
            "rule": f.rule,
            "detail": f.detail,
            "event_id": jsonable(f.event_id),
            "author": jsonable(f.author),
            "seq": f.seq,
            "describe": f.describe(),
        }
    return {
        "position": None,
        "rule": f.rule,
        "detail": f.detail,
        "event_id": jsonable(f.event_id),
        "author": jsonable(f.author),
        "seq": f.seq,
        "kind": f.kind,
        "describe": f"{f.kind} id {f.event_id.hex()} author 0x{f.author.hex()} seq {f.seq}:"
        f" {f.rule}" + (f" - {f.detail}" if f.detail else ""),
    }


def _completeness_json(completeness: Completeness) -> dict[str, Any]:
    out: dict[str, Any] = {"source": completeness.kind}
    trailer = completeness.trailer
    if trailer is not None:
        out.update(
            trailer_events=trailer.count,
            trailer_authors=len(trailer.heads),
            signer=to_checksum(trailer.signer),
        )
    if completeness.warning:
        out["warning"] = completeness.warning
    if completeness.kind == "store":
        peers = completeness.peers
        out["peers"] = len(peers)
        out["complete_up_to_peers"] = sum(v.complete for v in peers)
        out["behind"] = [
            {"peer": v.peer, "author": to_checksum(a), "their_seq": theirs, "our_seq": ours}
            for v in peers
            for a, theirs, ours in v.behind
        ][:PEER_DETAIL_LIMIT]
        out["differs"] = [
            {"peer": v.peer, "author": to_checksum(a), "seq": seq}
            for v in peers
            for a, seq in v.differs
        ][:PEER_DETAIL_LIMIT]
    return out


def _peer_lines(completeness: Completeness) -> list[str]:
    """For a store: how it compares with the heads its peers announced in their sync requests."""
    peers = completeness.peers
    if not peers:
        return ["completeness: no heads seen from peers yet (they are recorded when peers sync)"]
    lagging = [v for v in peers if not v.complete]
    if not lagging:
        return [f"complete up to the heads seen from {len(peers)} peer(s)"]
    lines = [f"behind the heads seen from {len(lagging)} of {len(peers)} peer(s):"]
    for v in lagging:
        for author, theirs, ours in v.behind[:PEER_LINES]:
            lines.append(f"  {v.peer}: author {to_checksum(author)} seq {theirs}, here {ours}")
        for author, seq in v.differs[:PEER_LINES]:
            lines.append(
                f"  {v.peer}: author {to_checksum(author)} seq {seq} is another event here"
            )
        shown = min(len(v.behind), PEER_LINES) + min(len(v.differs), PEER_LINES)
        more = len(v.behind) + len(v.differs) - shown
        if more > 0:
            lines.append(f"  {v.peer}: and {more} more")
    return lines


def _audit_json(report: AuditReport, own: set[bytes], completeness: Completeness) -> dict[str, Any]:
    integrity = [_finding(f) for f in report.integrity(own)]
    return {
        "clean": report.clean,
        "events": report.events,
        "authors": report.authors,
        "integrity": {"ok": not integrity, "problems": integrity},
        "evidence": [_finding(f) for f in report.evidence(own)],
        "own_authors": [to_checksum(a) for a in sorted(own)],
        "completeness": _completeness_json(completeness),
        "violations": [_finding(f) for f in (*report.problems, *report.violations)],
        "state": state_summary(report.state),
    }


def _print_audit(report: AuditReport, own: set[bytes], completeness: Completeness) -> None:
    summary = state_summary(report.state)
    print(f"events   {report.events}  authors {report.authors}  round {summary['round']}")
    print("by kind  " + ", ".join(f"{n} {c}" for n, c in summary["events_by_kind"].items()))
    print(
        f"offers   {len(summary['offers'])}  total stake {readable(int(summary['total_stake']))}"
        f"  delegations {summary['delegations']}"
    )
    print(
        f"jobs     {summary['jobs']}  "
        + ", ".join(f"{s} {c}" for s, c in summary["jobs_by_status"].items())
    )
    for path, count in summary["job_paths"].items():
        print(f"         {count} {path}")
    print(
        f"tickets  {summary['tickets']}  "
        + ", ".join(f"{s} {c}" for s, c in summary["tickets_by_status"].items())
    )
    integrity, evidence = report.integrity(own), report.evidence(own)
    if integrity:
        print(f"integrity FAILED: {len(integrity)} problem(s) with the log itself")
        for f in integrity:
            print("  " + _finding(f)["describe"])
    else:
        complete = ""
        if completeness.trailer is not None:
            complete = (
                f"; complete: the {completeness.trailer.count} events of the trailer signed by"
                f" {to_checksum(completeness.trailer.signer)}"
            )
        elif completeness.kind == "castlog-v1":
            complete = "; completeness not checked (version-1 file)"
        print(f"integrity clean: every signature, chain and stored byte verified{complete}")
    if completeness.kind == "store":
        for line in _peer_lines(completeness):
            print(line)
    if evidence:
        print(f"evidence against other authors: {len(evidence)} finding(s)")
        for f in evidence:
            print("  " + _finding(f)["describe"])
    else:
        print("evidence against other authors: none")
