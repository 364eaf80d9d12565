"""`castnet log synth|import|export|show` and `castnet audit`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from chain.errors import ChainError
from events import kinds as k
from events.audit import AuditReport
from events.crypto import parse_address
from events.envelope import decode, decode_verified
from events.errors import EventError
from node.audit.chain import audit_chain
from node.audit.log import audit_path
from node.jsonview import event_view, jsonable, state_summary
from node.local.synth import synth_events
from node.progress import counted
from storage.castlog import read_castlog, write_castlog
from storage.errors import StorageError
from storage.sources import open_log
from storage.store import EventStore, Outcome

log = logging.getLogger("castnet.log")
IMPORT_BATCH = 2048


def register(sub: Any) -> None:
    group = sub.add_parser("log", help="create, import, export and show signed event logs")
    cmds = group.add_subparsers(dest="log_command", required=True, metavar="ACTION")

    p = cmds.add_parser("synth", help="write a realistic signed history to a .castlog file")
    p.add_argument("-o", "--out", required=True, type=Path, help="output .castlog file")
    p.add_argument("--events", type=int, required=True, help="number of events")
    p.add_argument("--authors", type=int, default=6, help="number of authors (>= 2)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_synth)

    p = cmds.add_parser("import", help="verify a .castlog and append it to a data dir")
    p.add_argument("file", type=Path)
    p.add_argument("data_dir", type=Path)
    p.set_defaults(run=cmd_import)

    p = cmds.add_parser("export", help="write a data dir's log to a .castlog file")
    p.add_argument("data_dir", type=Path)
    p.add_argument("-o", "--out", required=True, type=Path)
    p.set_defaults(run=cmd_export)

    p = cmds.add_parser("show", help="print the events of a data dir or .castlog")
    p.add_argument("source", type=Path, help="DATA_DIR or FILE")
    p.add_argument("--kind", help="only events of this kind (e.g. Offer, JobPosted)")
    p.add_argument("--author", help="only events by this 0x address")
    p.add_argument("--limit", type=int, default=0, help="at most this many events")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=cmd_show)

    p = sub.add_parser("audit", help="verify signatures and chains, refold and summarize a log")
    p.add_argument("source", type=Path, help="DATA_DIR or FILE")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--rpc", metavar="URL", help="also check ChainObserved events on this chain")
    p.add_argument("--contracts", type=Path, metavar="FILE",
                   help="the deployment file (with --rpc)")  # fmt: skip
    p.set_defaults(run=cmd_audit)


def _fail(message: str) -> int:
    print(f"castnet: {message}", file=sys.stderr)
    return 2


def cmd_synth(args: argparse.Namespace) -> int:
    if args.events < 0:
        return _fail("--events must be >= 0")
    if args.authors < 2:
        return _fail("--authors must be >= 2 (a gateway and an orchestrator)")
    events = counted(synth_events(args.events, args.authors, args.seed), "synth", args.events)
    count = write_castlog(args.out, (e.raw for e in events))
    print(f"wrote {count} events by {args.authors} authors to {args.out}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    tally = {outcome: 0 for outcome in Outcome}
    invalid = 0
    try:
        with EventStore.open_dir(args.data_dir) as store:
            batch: list[tuple[int, Any]] = []
            for position, raw in counted(read_castlog(args.file), "import"):
                try:
                    batch.append((position, decode_verified(raw)))
                except EventError as exc:
                    invalid += 1
                    print(f"event {position}: rejected: {exc}", file=sys.stderr)
                if len(batch) >= IMPORT_BATCH:
                    _append(store, batch, tally)
                    batch = []
            _append(store, batch, tally)
    except StorageError as exc:
        return _fail(str(exc))
    refused = tally[Outcome.GAP] + tally[Outcome.BROKEN_CHAIN]
    print(
        f"imported {tally[Outcome.APPENDED]} events into {args.data_dir}"
        f" ({tally[Outcome.DUPLICATE]} already present, {tally[Outcome.EQUIVOCATION]} kept as"
        f" equivocation evidence, {refused} refused for broken chains, {invalid} invalid)"
    )
    return 1 if refused or invalid else 0


def _append(store: EventStore, batch: list[tuple[int, Any]], tally: dict[Outcome, int]) -> None:
    if not batch:
        return
    results = store.append([event for _, event in batch])
    for (position, event), result in zip(batch, results, strict=True):
        tally[result.outcome] += 1
        if result.outcome in (Outcome.GAP, Outcome.BROKEN_CHAIN):
            print(
                f"event {position}: refused ({result.outcome.value}): author 0x{event.author.hex()}"
                f" seq {event.seq}",
                file=sys.stderr,
            )
        elif result.outcome is Outcome.EQUIVOCATION:
            print(
                f"event {position}: equivocation: author 0x{event.author.hex()} seq {event.seq}:"
                f" {result.other_id.hex()} and {event.id.hex()}",
                file=sys.stderr,
            )


def cmd_export(args: argparse.Namespace) -> int:
    try:
        with open_log(args.data_dir) as source:
            if not source.description.startswith("store"):
                return _fail(f"{args.data_dir} is not a data directory")
            count = write_castlog(args.out, (raw for _, raw in source.rows))
    except StorageError as exc:
        return _fail(str(exc))
    print(f"exported {count} events to {args.out}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    kind = None
    if args.kind:
        matches = [c for name, c in k.KIND_BY_NAME.items() if name.lower() == args.kind.lower()]
        if not matches:
            return _fail(f"unknown kind {args.kind!r}; kinds: {', '.join(k.KIND_BY_NAME)}")
        kind = matches[0].KIND
    try:
        author = parse_address(args.author) if args.author else None
    except ValueError as exc:
        return _fail(str(exc))
    shown = 0
    try:
        with open_log(args.source) as source:
            for position, raw in source.rows:
                try:
                    event = decode(raw)
                except EventError as exc:
                    print(f"event {position}: undecodable: {exc}", file=sys.stderr)
                    continue
                if (kind is not None and event.kind != kind) or (author and event.author != author):
                    continue
                view = event_view(event, position)
                if args.json:
                    print(json.dumps(view))
                else:
                    print(_line(view))
                shown += 1
                if args.limit and shown >= args.limit:
                    break
    except StorageError as exc:
        return _fail(str(exc))
    return 0


def _line(view: dict[str, Any]) -> str:
    body = view["body"]
    fields = (
        ", ".join(f"{key}={_short(v)}" for key, v in body.items())
        if isinstance(body, dict)
        else _short(body)
    )
    return (
        f"{view['position']:>8} {view['kind']:<15} {view['author'][:10]}… #{view['seq']:<6}"
        f" {view['id'][:12]}… {fields}"
    )


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 24 else text[:21] + "…"


def cmd_audit(args: argparse.Namespace) -> int:
    try:
        report = audit_path(args.source)
    except StorageError as exc:
        print(f"castnet: audit failed: {exc}", file=sys.stderr)
        return 1
    chain = None
    if args.rpc:
        if args.contracts is None:
            return _fail("audit --rpc needs --contracts FILE (the deployment file)")
        try:
            chain = audit_chain(args.source, args.rpc, args.contracts)
        except ChainError as exc:
            return _fail(f"audit: {exc}")
    if args.json:
        out = _audit_json(report)
        if chain is not None:
            out["chain"] = {"checked": chain.checked, "confirmed": chain.confirmed,
                            "problems": chain.problems}  # fmt: skip
        print(json.dumps(out))
    else:
        _print_audit(report)
        if chain is not None:
            for problem in chain.problems:
                print(f"chain: {problem}")
            verdict = "confirmed" if chain.clean else "NOT confirmed"
            print(f"chain: {chain.confirmed} of {chain.checked} events {verdict} on {args.rpc}")
    return 0 if report.clean and (chain is None or chain.clean) else 1


def _findings(report: AuditReport) -> list[dict[str, Any]]:
    found = [
        {
            "position": p.position,
            "rule": p.rule,
            "detail": p.detail,
            "event_id": jsonable(p.event_id),
            "author": jsonable(p.author),
            "seq": p.seq,
            "describe": p.describe(),
        }
        for p in report.problems
    ]
    for v in report.violations:
        found.append(
            {
                "position": None,
                "rule": v.rule,
                "detail": v.detail,
                "event_id": jsonable(v.event_id),
                "author": jsonable(v.author),
                "seq": v.seq,
                "kind": v.kind,
                "describe": f"{v.kind} id {v.event_id.hex()} author 0x{v.author.hex()} seq {v.seq}:"
                f" {v.rule}" + (f" - {v.detail}" if v.detail else ""),
            }
        )
    return found


def _audit_json(report: AuditReport) -> dict[str, Any]:
    return {
        "clean": report.clean,
        "events": report.events,
        "authors": report.authors,
        "violations": _findings(report),
        "state": state_summary(report.state),
    }


def _print_audit(report: AuditReport) -> None:
    summary = state_summary(report.state)
    print(f"events   {report.events}  authors {report.authors}  round {summary['round']}")
    print("by kind  " + ", ".join(f"{n} {c}" for n, c in summary["events_by_kind"].items()))
    print(
        f"offers   {len(summary['offers'])}  total stake {summary['total_stake']} wei"
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
    findings = _findings(report)
    if findings:
        print(f"FAILED: {len(findings)} problem(s)")
        for finding in findings:
            print("  " + finding["describe"])
    else:
        print("clean: every signature and chain verified, no violations")
