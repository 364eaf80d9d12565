"""`castnet testnet up|status|transcode|down`: a local multi-process network on anvil."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from node.amounts import readable
from node.cli.commands import command_help
from node.local.testnet import TestnetError, TestnetParams, down, status, transcode, up

DEFAULT_DIR = Path("castnet-testnet")


def register(sub: Any) -> None:
    group = sub.add_parser("testnet", help=command_help("testnet"))
    cmds = group.add_subparsers(dest="testnet_command", required=True, metavar="ACTION")
    p = cmds.add_parser("up", help="start anvil, deploy, fund, and start N nodes")
    p.add_argument("--nodes", type=int, default=5, help="1 gateway, N-2 orchestrators, 1 delegator")
    p.add_argument("--block-time", type=float, default=1.0, help="seconds per block")
    p.add_argument("--round-length", type=int, default=5, help="blocks per round")
    p.set_defaults(run=cmd_up)
    p = cmds.add_parser("status", help="processes, chain, stakes and the gateway")
    p.set_defaults(run=cmd_status)
    p = cmds.add_parser("transcode", help="transcode a file through the testnet's gateway")
    p.add_argument("input", type=Path)
    p.add_argument("--timeout", type=float, default=300.0)
    p.set_defaults(run=cmd_transcode)
    p = cmds.add_parser("down", help="stop the processes this testnet started (by pid)")
    p.set_defaults(run=cmd_down)
    for action in cmds.choices.values():
        action.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the testnet's folder")
        action.add_argument("--json", action="store_true", help="print one JSON object")


def _say(args: argparse.Namespace) -> Any:
    return (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print


def _fail(what: str, exc: Exception) -> int:
    print(f"castnet testnet {what}: {exc}", file=sys.stderr)
    return 2


def cmd_up(args: argparse.Namespace) -> int:
    params = TestnetParams(nodes=args.nodes, block_time_s=args.block_time,
                           round_length=args.round_length)  # fmt: skip
    try:
        state = up(args.dir, params, say=_say(args))
    except TestnetError as exc:
        return _fail("up", exc)
    if args.json:
        print(json.dumps(state))
    else:
        print(f"gateway API: {state['api']}")
        print(
            f"try: castnet testnet transcode FILE --dir {args.dir}; stop: castnet testnet down "
            f"--dir {args.dir}"
        )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    try:
        report = status(args.dir)
    except TestnetError as exc:
        return _fail("status", exc)
    if args.json:
        print(json.dumps(report))
        return 0
    anvil = report["anvil"]
    print(f"anvil {anvil['url']} pid {anvil['pid']} {'up' if anvil['alive'] else 'DOWN'}")
    chain = report.get("chain", {})
    if "error" in chain:
        print(f"chain: {chain['error']}")
    else:
        print(f"chain: block {chain['block']}, round {chain['round']}, "
              f"{len(chain['active'])} active orchestrator(s)")  # fmt: skip
    for n in report["nodes"]:
        extra = ""
        if "stake" in n:
            extra = f" stake {readable(n['stake'])}, last reward round {n['last_reward_round']}"
        if "bonded" in n:
            extra = f" bonded {readable(n['bonded'])} to {n['delegate']}"
        state = "up" if n["alive"] else "DOWN"
        print(f"{n['name']} {n['role']} {n['address']} pid {n['pid']} {state}{extra}")
    if report.get("api"):
        print(f"gateway API {report['api']}: {report.get('gateway')}")
    return 0


def cmd_transcode(args: argparse.Namespace) -> int:
    try:
        record = transcode(args.dir, args.input, args.timeout, say=_say(args))
    except TestnetError as exc:
        return _fail("transcode", exc)
    if args.json:
        print(json.dumps(record))
    else:
        print(f"job {record['id']}: {record['status']}; playlist {record.get('playlist')}")
    return 0 if record["status"] == "done" else 1


def cmd_down(args: argparse.Namespace) -> int:
    try:
        stopped = down(args.dir, say=_say(args))
    except TestnetError as exc:
        return _fail("down", exc)
    if args.json:
        print(json.dumps({"stopped": stopped}))
    return 0
