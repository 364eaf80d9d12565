"""`castnet demo`: a gateway, N orchestrators and a delegator in one process on 127.0.0.1,
transcoding a clip end to end with ticket payments, redemption and audited logs. While the
network runs it serves `GET /metrics` for all its nodes (`--metrics-listen`); `--serve` keeps the
network and that listener up after the job until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import trio

from node.amounts import AmountError, parse_amount
from node.cli.commands import command_help
from node.cli.stopping import stopped_exit, until_done_or_signal
from node.config import VERIFY_POLICIES, ConfigError, parse_listen
from node.gateway.live_ai import LiveAi, LiveAiError, live_ai
from node.local.demo import Attach, DemoOptions, demo
from node.local.network import Network
from node.local.summary import print_summary


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help=command_help("demo"))
    p.add_argument("--input", type=Path, help="video file (default: a generated clip)")
    p.add_argument("--out", type=Path, default=Path("castnet-demo-out"), help="HLS output folder")
    p.add_argument("--orchestrators", type=int, default=3, help="how many (default 3)")
    p.add_argument("--profiles", default="720p,480p,360p", help="ladder, e.g. 720p,480p,360p")
    p.add_argument("--preset", default="veryfast", help="x264 preset")
    p.add_argument("--size", help="size of the generated clip (1920x1080; 480x270 with --ai)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the generated clip")
    p.add_argument("--data-dir", type=Path, help="where node logs go (default: a temp folder)")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND",
        help="per orchestrator in order: none, wrong-renditions or die-mid-job",
    )
    p.add_argument("--deposit", default="1eth", help="gateway deposit, with its unit (1eth)")
    p.add_argument("--reserve", default="1eth", help="gateway reserve, with its unit (1eth)")
    p.add_argument("--capacity", type=int, default=2, help="segments per orchestrator at once")
    p.add_argument("--verify", choices=VERIFY_POLICIES, default="sample",
                   help="gateway: full checks on all segments or sampled")  # fmt: skip
    p.add_argument(
        "--ticket-ev", help="EV of a ticket, with its unit: 0.002eth (default: the demo's)"
    )
    p.add_argument(
        "--price", help="cheapest price per pixel, with its unit: 0.2gwei (default: the demo's)"
    )
    p.add_argument(
        "--metrics-listen",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="where GET /metrics serves every node's metrics while the network runs "
        "(default: a free port on 127.0.0.1, printed)",
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="after the job, keep the network and its metrics up until Ctrl-C",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    ai = p.add_argument_group("live AI (instead of transcoding: the clip streamed live through "
                              "an AI pipeline)")  # fmt: skip
    ai.add_argument("--ai", metavar="PIPELINE", help="style, matte, filter or upscale")
    ai.add_argument("--style", help="style: a named style (default mosaic)")
    ai.add_argument("--background", help="matte: '#rrggbb' or blur")
    ai.add_argument(
        "--infer-size",
        help="inference size WxH (default 160x90 for style/matte: CPU nodes keep up)",
    )
    ai.add_argument("--segment", type=float, default=2.0, help="live segment seconds")
    p.set_defaults(run=cmd_demo)


def _demo_ai(args: argparse.Namespace) -> LiveAi | None:
    if args.ai is None:
        if args.style or args.background or args.infer_size:
            raise LiveAiError("--style, --background and --infer-size need --ai PIPELINE")
        return None
    options: dict[str, Any] = {}
    if args.ai in ("style", "matte"):
        options["infer_size"] = args.infer_size or "160x90"
    elif args.infer_size:
        options["infer_size"] = args.infer_size
    if args.ai == "style":
        options["style"] = args.style or "mosaic"
    elif args.style:
        options["style"] = args.style
    if args.background:
        options["background"] = args.background
    return live_ai(args.ai, "", options)


def cmd_demo(args: argparse.Namespace) -> int:
    if args.orchestrators < 1:
        print("castnet demo: --orchestrators must be at least 1", file=sys.stderr)
        return 2
    try:
        deposit = parse_amount(args.deposit, "--deposit", allow_zero=True)
        reserve = parse_amount(args.reserve, "--reserve", allow_zero=True)
        ev = parse_amount(args.ticket_ev, "--ticket-ev") if args.ticket_ev else None
        price = parse_amount(args.price, "--price", unit="gwei") if args.price else None
        host, port = parse_listen(args.metrics_listen, "--metrics-listen")
        ai = _demo_ai(args)
        if args.segment <= 0:
            raise ConfigError("--segment must be positive")
    except (AmountError, ConfigError, LiveAiError) as exc:
        print(f"castnet demo: {exc}", file=sys.stderr)
        return 2
    if busy := _cannot_listen(host, port):  # before the chain and nodes, not after them
        print(f"castnet demo: cannot serve metrics on {host}:{port}: {busy}", file=sys.stderr)
        return 1
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="castnet-demo-nodes-"))
    faults = tuple("" if f == "none" else f for f in args.fault)
    options = DemoOptions(
        input=args.input,
        out=args.out,
        orchestrators=args.orchestrators,
        profiles=args.profiles,
        preset=args.preset,
        size=args.size or ("480x270" if ai else "1920x1080"),
        seconds=args.seconds,
        data_dir=data_dir,
        faults=faults,
        gateway_deposit=deposit,
        gateway_reserve=reserve,
        capacity=args.capacity,
        verify=args.verify,
        ticket_ev=ev,
        price=price,
        ai=ai,
        segment_s=args.segment,
    )

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def show(summary: dict[str, Any]) -> None:
        summary["log_file"] = str(log_file)
        if args.json:
            print(json.dumps(summary, indent=2), flush=True)
        else:
            print_summary(summary)
            sys.stdout.flush()

    def serve(summary: dict[str, Any]) -> None:
        show(summary)
        say("serving the network and its metrics until Ctrl-C")

    attach = _metrics_listener(host, port, say)
    with _logs_to_file(data_dir, args.verbose) as log_file, _plain_exits():
        summary, stopped_by = trio.run(
            until_done_or_signal, demo, options, say, attach, serve if args.serve else None
        )
    if stopped_by is not None:
        return stopped_exit("demo", stopped_by)
    if args.serve:
        return 130  # stopped by Ctrl-C; the summary was shown before serving
    show(summary)
    ok = summary["ok"] and summary["audit"]["clean"]
    return 0 if ok else 1


def _cannot_listen(host: str, port: int) -> str:
    """Why a listener on host:port cannot be opened (a port in use, an unknown host), or "".
    Checked as the listener binds (SO_REUSEADDR), on every address of the host; port 0 is
    always free. The listener itself still reports a port taken between this check and it."""
    if port == 0:
        return ""
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        ):
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
    except OSError as exc:
        return str(exc)
    return ""


def _metrics_listener(host: str, port: int, say: Callable[[str], None]) -> Attach:
    """`GET /metrics` on host:port for every node of the demo's network, labelled by node name
    (node.api.metrics.NetworkMetrics), up while the network is."""

    @asynccontextmanager
    async def attach(net: Network) -> AsyncIterator[dict[str, Any]]:
        from node.api.metrics import NetworkMetrics
        from node.api.ops import build_ops_app, metrics_route, serve_app

        metrics = NetworkMetrics(_node_parts(net), alive=lambda name: net.member(name).alive)
        app = build_ops_app([metrics_route(metrics.render)])
        async with trio.open_nursery() as nursery:
            try:
                bound = await nursery.start(serve_app, app, host, port)
            except* OSError as group:
                reason = next(e for e in _leaves(group) if isinstance(e, OSError))
                raise SystemExit(
                    f"castnet demo: cannot serve metrics on {host}:{port}: {reason}"
                ) from None
            url = "http://{}:{}/metrics".format(*bound)
            say(f"metrics at {url}")
            yield {"metrics_url": url}
            nursery.cancel_scope.cancel()

    return attach


def _node_parts(net: Network) -> dict[str, Any]:
    """What the metrics collectors read of each node: the gateway with the chain (its deposit,
    the block and round), each orchestrator with its role and reward caller, the delegator's
    gossip and log."""
    from node.api.metrics import NodeParts

    roles = {member.name: (orch, rewarder) for member, orch, rewarder
             in zip(net.members[1:-1], net.orchestrators, net.rewarders, strict=True)}  # fmt: skip
    nodes: dict[str, Any] = {}
    for member in net.members:
        parts = NodeParts({member.role: member})
        if member.role == "gateway":
            parts.ledger = net.ledger
        elif member.name in roles:
            parts.orchestrator, parts.rewards = roles[member.name]
        nodes[member.name] = parts
    return nodes


@contextmanager
def _plain_exits() -> Iterator[None]:
    """Ctrl-C or a refusal inside the network's nurseries reaches the terminal as itself (exit
    130, or the refusal's message), not as an exception group with a traceback."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if all(isinstance(e, KeyboardInterrupt) for e in leaves):
            raise KeyboardInterrupt from None
        if len(leaves) == 1 and isinstance(leaves[0], SystemExit):
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


@contextmanager
def _logs_to_file(data_dir: Path, verbose: bool) -> Iterator[Path]:
    """The nodes' log lines go to `demo.log` in the demo's folder, so the summary reads clean;
    with -v they show on the terminal as well. The terminal's handlers are restored after."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "demo.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    quiet = [] if verbose else [h for h in root.handlers if type(h) is logging.StreamHandler]
    levels = [h.level for h in quiet]
    for h in quiet:
        h.setLevel(logging.CRITICAL + 1)
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()
        for h, level in zip(quiet, levels, strict=True):
            h.setLevel(level)
