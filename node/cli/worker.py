"""`castnet worker --orchestrator MULTIADDR --data-dir DIR`: a separate compute process (a GPU
machine) attached to an orchestrator over libp2p, transcoding the segments it pushes, until
SIGINT/SIGTERM. `--print-peer-id` shows the id to list in the orchestrator's `workers`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import trio

from node.cli.commands import command_help
from node.cli.heap import freeze_startup_heap
from node.cli.stopping import stop_on_signal
from node.config import ConfigError, parse_listen
from node.orchestrator.role import capabilities
from node.orchestrator.worker import Worker, WorkerConfig
from p2p.config import DEFAULT_NETWORK, P2PConfig
from p2p.errors import P2PError
from p2p.host import quiet_libp2p
from p2p.identity import load_or_create_identity, peer_id_of

log = logging.getLogger("castnet.worker")


def register(sub: Any) -> None:
    p = sub.add_parser("worker", help=command_help("worker"))
    p.add_argument("--orchestrator", metavar="MULTIADDR",
                   help="the orchestrator's /ip4/../tcp/../p2p/<peer id>")  # fmt: skip
    p.add_argument("--data-dir", type=Path, required=True, help="holds this worker's p2p key")
    p.add_argument("--capacity", type=int, default=1, help="segments at once (%(default)s)")
    p.add_argument(
        "--encoder",
        default="auto",
        help="software, auto (NVENC when it opens; default) or an encoder name",
    )
    p.add_argument("--listen", default="/ip4/127.0.0.1/tcp/0", metavar="MULTIADDR",
                   help="p2p listen address (%(default)s)")  # fmt: skip
    p.add_argument("--network", default=DEFAULT_NETWORK, help="network id (%(default)s)")
    p.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics")  # fmt: skip
    p.add_argument("--print-peer-id", action="store_true",
                   help="print this worker's peer id (creating its key) and exit")  # fmt: skip
    p.set_defaults(run=cmd_worker)


def _fail(message: str) -> int:
    print(f"castnet worker: {message}", file=sys.stderr, flush=True)
    return 2


def cmd_worker(args: argparse.Namespace) -> int:
    data_dir = args.data_dir.resolve()
    try:
        if args.print_peer_id:
            print(peer_id_of(load_or_create_identity(data_dir)).to_base58())
            return 0
        if not args.orchestrator:
            return _fail("--orchestrator MULTIADDR is required")
        if args.capacity < 1:
            return _fail("--capacity must be >= 1")
        metrics = parse_listen(args.metrics_listen, "--metrics-listen") if (
            args.metrics_listen) else None  # fmt: skip
        p2p = P2PConfig(network=args.network, listen=(args.listen,))
        caps = capabilities() if args.encoder != "software" else software_capabilities()
        config = WorkerConfig(args.orchestrator, data_dir, args.capacity, args.encoder, caps, p2p)
        worker = Worker(config, on_line=lambda line: print(line, flush=True))
    except (P2PError, ValueError, OSError, ConfigError) as exc:
        return _fail(str(exc))
    if not args.verbose:
        logging.getLogger("castnet.worker").setLevel(logging.WARNING)
    quiet_libp2p(logging.WARNING if args.verbose else logging.ERROR)
    try:
        trio.run(serve, worker, metrics)
    except (P2PError, OSError) as exc:
        return _fail(str(exc))
    if worker.refusal is not None:
        return _fail(f"refused by the orchestrator: {worker.refusal}")
    return 0


def software_capabilities() -> tuple[str, ...]:
    return tuple(c for c in capabilities() if not c.endswith(":hw"))


async def serve(worker: Worker, metrics: tuple[str, int] | None = None) -> None:
    """Run until the first SIGINT or SIGTERM (or a final refusal), then stop cleanly; with
    `metrics` (host, port), serve GET /metrics there meanwhile."""
    with stop_on_signal() as stopper:
        async with trio.open_nursery() as nursery:

            async def work(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                await worker.run(task_status=task_status)
                nursery.cancel_scope.cancel()  # refused for good: nothing left to do

            await nursery.start(work)
            print(f"castnet worker {worker.peer_id} for {worker.config.orchestrator}", flush=True)
            for addr in worker.addrs():
                print(f"  listening {addr}", flush=True)
            if metrics is not None:
                from node.api.metrics import WorkerMetrics  # the HTTP stack only when asked
                from node.api.ops import build_ops_app, metrics_route, serve_app

                app = build_ops_app([metrics_route(WorkerMetrics(worker).render)])
                host, port = await nursery.start(serve_app, app, *metrics)
                print(f"  metrics http://{host}:{port}/metrics", flush=True)
            frozen = freeze_startup_heap()
            log.debug("%d objects made by the start left out of garbage collection", frozen)
            await stopper.wait(nursery.cancel_scope)
    print(f"stopped ({worker.stats.segments} segment(s) served)", flush=True)
