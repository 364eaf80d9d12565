"""`castnet ai PIPELINE INPUT --out DIR`: an AI job on an in-process network (a gateway and N
orchestrators on 127.0.0.1, as `castnet demo` runs them): the input is segmented, each segment
paid for with tickets and run by an orchestrator offering the pipeline, every output checked, and
`detections.jsonl` or the processed video's HLS written to DIR; prints a summary. Style and matte
take their options as flags (`castnet ai style clip.mp4 --style mosaic --infer-size 160x90`), sent
with every segment (never a local picture: the work runs on the orchestrators)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

import trio

from inference.engine import InferenceConfig
from inference.errors import InferenceError
from inference.manifest import PIPELINE_KINDS
from inference.providers import PREFERENCES
from media.errors import MediaError
from node.amounts import readable
from node.cli.ai_options import add_option_flags, options_from_args
from node.cli.commands import amount_arg, command_help
from node.cli.stopping import stopped_exit, until_done_or_signal
from node.gateway.ai_jobs import AiJobError, check_options, run_ai_file
from node.gateway.role import GatewayConfig, SegmentOutcome
from node.local.network import default_plan, embedded_ledger, open_network


def register(sub: Any) -> None:
    p = sub.add_parser("ai", help=command_help("ai"))
    p.add_argument("pipeline", choices=PIPELINE_KINDS)
    p.add_argument("input", type=Path, help="video file")
    p.add_argument("--model", default="", help="registered model name (default: each node's)")
    p.add_argument("--models-dir", type=Path, help="folder of *.toml model manifests")
    p.add_argument("--provider", default="auto", choices=PREFERENCES, help="execution provider")
    p.add_argument("--out", type=Path, default=Path("castnet-ai-out"), help="output folder")
    p.add_argument("--orchestrators", type=int, default=2, help="how many (default 2)")
    p.add_argument("--data-dir", type=Path, help="where node logs go (default: a temp folder)")
    p.add_argument("--ticket-ev", type=amount_arg("gwei"), default="20gwei",
                   help="EV of a ticket, with its unit (%(default)s)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_option_flags(p, local=False)
    p.set_defaults(run=cmd_ai)


def cmd_ai(args: argparse.Namespace) -> int:
    if args.orchestrators < 1:
        print("castnet ai: --orchestrators must be at least 1", file=sys.stderr)
        return 2
    if not args.input.is_file():
        print(f"castnet ai: {args.input} is not a file", file=sys.stderr)
        return 2
    try:
        args.options = check_options(args.pipeline, options_from_args(args))
    except (ValueError, AiJobError) as exc:
        print(f"castnet ai: {exc}", file=sys.stderr)
        return 2
    if not getattr(args, "verbose", False):
        for name in ("castnet.p2p", "castnet.gateway", "castnet.orchestrator", "libp2p"):
            logging.getLogger(name).setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="castnet-ai-") as temp:
        summary, stopped_by = trio.run(until_done_or_signal, _ai, args, args.data_dir or Path(temp))
    if stopped_by is not None:
        return stopped_exit("ai", stopped_by)
    if summary["error"]:
        print(f"castnet ai: {summary['error']}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        seg = summary["segments"]
        print(f"{args.pipeline}: {seg['completed']}/{seg['total']} segments, "
              f"{summary['tickets_sent']} tickets, fees {readable(summary['fees_wei'], 'ETH')} -> "
              f"{', '.join(summary['files'])}")  # fmt: skip
    return 0


async def _ai(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    inference = InferenceConfig(provider=args.provider, models_dir=args.models_dir)
    plan = default_plan(args.orchestrators, GatewayConfig(), ticket_ev=Fraction(args.ticket_ev),
                        inference=inference)  # fmt: skip
    say(f"starting {args.orchestrators + 2} nodes on 127.0.0.1 (logs in {data_dir})")
    ledger = await trio.to_thread.run_sync(embedded_ledger, plan)
    async with open_network(data_dir, plan, ledger) as net:

        def on_segment(done: int, total: int, outcome: SegmentOutcome) -> None:
            who = "0x" + outcome.orchestrator.hex()[:8] if outcome.result else "FAILED"
            say(f"  segment {outcome.seq}: {who} after {outcome.attempts} attempt(s), "
                f"{outcome.latency_s:.2f} s  [{done}/{total}]")  # fmt: skip

        asked = "".join(f" {k}={v}" for k, v in sorted(args.options.items()))
        say(f"{args.pipeline}{asked} {args.input} -> {args.out}")
        try:
            report = await run_ai_file(net.gateway, args.pipeline, args.input, args.out,
                                       args.model, on_segment, options=args.options)  # fmt: skip
        except (AiJobError, InferenceError, MediaError) as exc:  # inside: no exception group
            return {"error": str(exc)}
    used = Counter("0x" + o.orchestrator.hex() for o in report.segments if o.result)
    files = sorted(str(p) for p in args.out.iterdir() if p.is_file())
    return {
        "error": "",
        "pipeline": args.pipeline,
        "model": args.model,
        "options": args.options,
        "out": str(args.out),
        "files": files,
        "segments": {"total": len(report.segments), "completed": report.completed},
        "tickets_sent": report.tickets_sent,
        "fees_wei": int(report.fees_wei),
        "ticket_ev_wei": int(report.ticket_ev_sent),
        "orchestrators": [{"address": a, "segments": n} for a, n in used.most_common()],
        "wall_s": round(report.wall_s, 3),
    }
