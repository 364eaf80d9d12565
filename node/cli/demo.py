"""`castnet demo`: a gateway, N orchestrators and a delegator in one process on 127.0.0.1,
transcoding a clip end to end with ticket payments, redemption and audited logs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from node.local.demo import DemoOptions, print_summary, run_demo


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the whole network in one process on a clip")
    p.add_argument("--input", type=Path, help="video file (default: a generated clip)")
    p.add_argument("--out", type=Path, default=Path("castnet-demo-out"), help="HLS output folder")
    p.add_argument("--orchestrators", type=int, default=3, help="how many (default 3)")
    p.add_argument("--profiles", default="720p,480p,360p", help="ladder, e.g. 720p,480p,360p")
    p.add_argument("--preset", default="veryfast", help="x264 preset")
    p.add_argument("--size", default="1920x1080", help="size of the generated clip")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the generated clip")
    p.add_argument("--data-dir", type=Path, help="where node logs go (default: a temp folder)")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND",
        help="per orchestrator in order: none, wrong-renditions or die-mid-job",
    )
    p.add_argument("--deposit", type=int, default=10**18, help="gateway deposit (wei)")
    p.add_argument("--reserve", type=int, default=10**18, help="gateway reserve (wei)")
    p.add_argument("--capacity", type=int, default=2, help="segments per orchestrator at once")
    p.add_argument("--ticket-ev", type=int, help="wei per ticket (EV)")
    p.add_argument("--price", type=int, help="cheapest price, wei per pixel")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    if args.orchestrators < 1:
        print("castnet demo: --orchestrators must be at least 1", file=sys.stderr)
        return 2
    if not args.verbose:  # progress lines only; the nodes' own logs are for -v
        for name in ("castnet.p2p", "castnet.gateway", "castnet.orchestrator", "libp2p"):
            logging.getLogger(name).setLevel(logging.WARNING)
    faults = tuple("" if f == "none" else f for f in args.fault)
    options = DemoOptions(
        input=args.input,
        out=args.out,
        orchestrators=args.orchestrators,
        profiles=args.profiles,
        preset=args.preset,
        size=args.size,
        seconds=args.seconds,
        data_dir=args.data_dir,
        faults=faults,
        gateway_deposit=args.deposit,
        gateway_reserve=args.reserve,
        capacity=args.capacity,
        ticket_ev=args.ticket_ev,
        price=args.price,
    )
    summary = run_demo(options, lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    ok = summary["ok"] and summary["audit"]["clean"]
    return 0 if ok else 1
