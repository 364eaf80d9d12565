"""`castnet live URL --out DIR`: live mode on an in-process network (a gateway and N orchestrators
on 127.0.0.1, as `castnet demo` runs them): pull the stream, publish a live HLS playlist in DIR
until the stream ends or Ctrl-C (then the playlist gets EXT-X-ENDLIST), print a summary. With
`--pipeline style --style mosaic` (or filter, upscale, matte, and their option flags) every
segment runs through that AI pipeline instead of the transcoding ladder, its audio kept."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

import trio

from inference.engine import InferenceConfig
from node.amounts import readable
from node.cli.ai_options import add_option_flags, options_from_args
from node.cli.commands import amount_arg, command_help
from node.gateway.live import LiveConfig, LiveError, LiveReport, LiveSession, check_live_url
from node.gateway.live_ai import LiveAi, LiveAiError, live_ai
from node.gateway.role import GatewayConfig, SegmentOutcome
from node.local.network import default_plan, embedded_ledger, open_network


def register(sub: Any) -> None:
    p = sub.add_parser("live", help=command_help("live"))
    p.add_argument("url", help="tcp://HOST:PORT[?listen=1], udp://, rtmp://, srt://, http(s):// "
                               "or a file path")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("castnet-live-out"), help="HLS output folder")
    p.add_argument("--orchestrators", type=int, default=2, help="how many (default 2)")
    p.add_argument("--profiles", default="360p,240p", help="ladder, e.g. 480p,360p")
    p.add_argument("--window", type=int, default=6, help="segments in the live playlist")
    p.add_argument("--read-timeout", type=float, default=30.0, help="seconds the input may stall")
    p.add_argument("--data-dir", type=Path, help="where node logs go (default: a temp folder)")
    p.add_argument("--ticket-ev", type=amount_arg("gwei"), default="20gwei",
                   help="EV of a ticket, with its unit (%(default)s)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")
    ai = p.add_argument_group("live AI (each segment through a video pipeline, audio kept)")
    ai.add_argument("--pipeline", help="filter, upscale, style or matte")
    ai.add_argument("--model", default="", help="a registered model (default: the pipeline's)")
    ai.add_argument("--models-dir", type=Path, help="extra model manifests for the orchestrators")
    ai.add_argument("--segment", type=float, default=2.0, help="segment seconds (default 2)")
    add_option_flags(p, local=False)
    p.set_defaults(run=cmd_live)


def ai_request(args: argparse.Namespace) -> LiveAi | None:
    """The live AI request the flags ask for (LiveAiError when they do not fit), or None."""
    try:
        options = options_from_args(args)
    except ValueError as exc:
        raise LiveAiError(str(exc)) from None
    if args.pipeline is None:
        if options or args.model:
            raise LiveAiError("--style, --blend, --background, --infer-size and --model need "
                              "--pipeline")  # fmt: skip
        return None
    return live_ai(args.pipeline, args.model, options)


def cmd_live(args: argparse.Namespace) -> int:
    if args.orchestrators < 1 or args.window < 1:
        print("castnet live: --orchestrators and --window must be at least 1", file=sys.stderr)
        return 2
    if not Path(args.url).is_file():
        try:
            check_live_url(args.url)
        except LiveError as exc:
            print(f"castnet live: {exc}", file=sys.stderr)
            return 2
    try:
        args.ai = ai_request(args)
    except LiveAiError as exc:
        print(f"castnet live: {exc}", file=sys.stderr)
        return 2
    if args.segment <= 0:
        print("castnet live: --segment must be positive", file=sys.stderr)
        return 2
    if not getattr(args, "verbose", False):
        for name in ("castnet.p2p", "castnet.gateway", "castnet.orchestrator", "libp2p"):
            logging.getLogger(name).setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="castnet-live-") as temp:
        try:
            summary = trio.run(_live, args, args.data_dir or Path(temp))
        except LiveError as exc:
            print(f"castnet live: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        seg = summary["segments"]
        fees = readable(summary["fees_wei"], "ETH")
        lat = summary["added_latency_s"]
        print(f"{summary['ended']}: {seg['published']} segments published, {seg['skipped']} "
              f"skipped, {summary['failovers']} failover(s), {summary['tickets_sent']} tickets, "
              f"fees {fees}, added latency p50 {lat['p50']:.2f} s p95 {lat['p95']:.2f} s "
              f"-> {summary['out']}/master.m3u8")  # fmt: skip
    return 0 if summary["segments"]["published"] else 1


async def _live(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    gateway_cfg = GatewayConfig(profiles=args.profiles)
    inference = InferenceConfig(models_dir=args.models_dir, preset="ultrafast")
    plan = default_plan(args.orchestrators, gateway_cfg, ticket_ev=Fraction(args.ticket_ev),
                        inference=inference)  # fmt: skip
    say(f"starting {args.orchestrators + 2} nodes on 127.0.0.1 (logs in {data_dir})")
    ledger = await trio.to_thread.run_sync(embedded_ledger, plan)
    async with open_network(data_dir, plan, ledger) as net:

        def on_publish(report: LiveReport, outcome: SegmentOutcome) -> None:
            who = "0x" + outcome.orchestrator.hex()[:8] if outcome.result else "SKIPPED"
            say(f"  segment {outcome.seq}: {who} after {outcome.attempts} attempt(s), "
                f"{outcome.latency_s:.2f} s  [{len(report.published)} published]")  # fmt: skip

        config = LiveConfig(window=args.window, segment_s=args.segment,
                            read_timeout_s=args.read_timeout)  # fmt: skip
        session = LiveSession(net.gateway, args.url, args.out, args.profiles, config, on_publish,
                              ai=args.ai)  # fmt: skip
        what = args.ai.describe() if args.ai else args.profiles
        say(f"live {args.url} -> {args.out}/master.m3u8 ({what}); Ctrl-C ends it")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, session)
            report = await session.run()
            nursery.cancel_scope.cancel()
    used = Counter("0x" + o.orchestrator.hex() for o in report.job.segments if o.result)
    return {
        "url": args.url,
        "out": str(args.out),
        "ended": report.ended,
        "segments": {
            "total": len(report.job.segments),
            "published": len(report.published),
            "skipped": len(report.skipped),
        },
        "failovers": report.failovers,
        "tickets_sent": report.job.tickets_sent,
        "fees_wei": int(report.job.fees_wei),
        "ticket_ev_wei": int(report.job.ticket_ev_sent),
        "orchestrators": [{"address": a, "segments": n} for a, n in used.most_common()],
        "added_latency_s": {
            "p50": round(report.latency_percentile(0.5), 3),
            "p95": round(report.latency_percentile(0.95), 3),
        },
        "pipeline": args.ai.pipeline if args.ai else None,
        "options": dict(args.ai.options) if args.ai else {},
        "wall_s": round(report.wall_s, 3),
    }


async def _stop_on_signal(session: LiveSession) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            session.stop()
            return
