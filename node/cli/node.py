"""`castnet node start|info`: run a p2p node until SIGINT/SIGTERM, or show its identity."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from node.cli.commands import command_help
from node.cli.heap import freeze_startup_heap
from node.cli.stopping import stop_on_signal
from node.config import ADMIT_MODES, ADMIT_STANDING
from node.errors import user_error
from p2p.config import (
    DEFAULT_LISTEN,
    DEFAULT_NETWORK,
    INBOUND_PER_IP,
    MAX_PEERS,
    PEERS_TARGET,
    P2PConfig,
)
from p2p.errors import P2PError
from storage.errors import StorageError
from storage.store import DB_NAME, EventStore

log = logging.getLogger("castnet.node")


def register(sub: Any) -> None:
    group = sub.add_parser("node", help=command_help("node"))
    cmds = group.add_subparsers(dest="node_command", required=True, metavar="ACTION")

    p = cmds.add_parser("start", help="run a node until SIGINT/SIGTERM")
    p.add_argument("--data-dir", required=True, type=Path, help="event store and p2p key")
    p.add_argument(
        "--listen", action="append", metavar="MULTIADDR",
        help=f"address to listen on (repeatable; default {DEFAULT_LISTEN})",
    )  # fmt: skip
    p.add_argument(
        "--bootstrap", nargs="+", action="extend", default=[], metavar="MULTIADDR",
        help="peers to dial and keep dialling: /ip4/../tcp/../p2p/<peer id>",
    )  # fmt: skip
    p.add_argument("--network", default=DEFAULT_NETWORK, help="network id (default %(default)s)")
    p.add_argument("--mdns", action="store_true", help="discover peers on the LAN (multicast)")
    p.add_argument(
        "--peers", type=int, default=PEERS_TARGET, metavar="N",
        help="while the gossip mesh is short of N peers, ask connected peers for more and "
        "dial them (peer exchange; default %(default)s, gossipsub's D_lo); 0: only the "
        "bootstrap peers and those that dial in",
    )  # fmt: skip
    p.add_argument(
        "--max-peers", type=int, default=MAX_PEERS, metavar="N",
        help="above N connected peers, close idle ones outside the gossip mesh (connected for "
        "30 s or more) down to three quarters of N (default %(default)s); 0: keep every one",
    )  # fmt: skip
    p.add_argument(
        "--inbound-per-ip", type=int, default=INBOUND_PER_IP, metavar="N",
        help="inbound connections one IP address may hold at once (loopback is not limited; "
        "default %(default)s); 0: no limit",
    )  # fmt: skip
    p.add_argument(
        "--admit", choices=(*ADMIT_MODES, "all"), default=ADMIT_STANDING,
        help="store and forward only the events of authors with standing: bonded, funded, or "
        "a counterparty of ours (standing, the default; see README), or of every author "
        "(open, for a private LAN; 'all' is its old name)",
    )  # fmt: skip
    p.set_defaults(run=cmd_start)

    p = cmds.add_parser("info", help="print peer id and listen addresses of a data dir")
    p.add_argument("data_dir", type=Path)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_info)


def _fail(message: str) -> int:
    print(f"castnet: {message}", file=sys.stderr)
    return 2


def start_config(args: argparse.Namespace) -> P2PConfig:
    """The p2p configuration `castnet node start` runs with (ValueError for a bad flag)."""
    return P2PConfig(
        network=args.network,
        listen=tuple(args.listen or [DEFAULT_LISTEN]),
        bootstrap=tuple(args.bootstrap),
        mdns=args.mdns,
        require_bootstrap=True,
        admission=args.admit == ADMIT_STANDING,
        peers_target=args.peers,
        max_peers=args.max_peers,
        inbound_per_ip=args.inbound_per_ip,
    )


def cmd_start(args: argparse.Namespace) -> int:
    try:
        config = start_config(args)
    except ValueError as exc:
        return _fail(str(exc))
    from p2p.host import quiet_libp2p  # libp2p (~1 s to import): once the flags are good

    # a failure that matters surfaces as our own one-line error; -v shows libp2p's own logs
    quiet_libp2p(logging.WARNING if getattr(args, "verbose", False) else logging.CRITICAL)
    try:
        trio.run(serve, args.data_dir, config)
    except BaseException as exc:  # the user's error is shown, anything else raised
        shown = user_error(exc, (P2PError, StorageError, OSError))
        if shown is None:
            raise
        return _fail(str(shown))
    return 0


async def serve(data_dir: Path, config: P2PConfig) -> None:
    """Run the node; the first SIGINT or SIGTERM stops it cleanly (store closed, hosts shut)."""
    from p2p.node import P2PNode

    with stop_on_signal() as stopper:
        async with trio.open_nursery() as nursery:
            node = P2PNode(data_dir, config)
            await nursery.start(node.run)
            frozen = freeze_startup_heap()
            log.debug("%d objects made by the start left out of garbage collection", frozen)
            print(f"peer id {node.peer_id}", flush=True)
            for addr in node.addrs:
                print(f"listening {addr}", flush=True)
            await stopper.wait(nursery.cancel_scope)
    log.info("stopped; %d events stored", node.event_count())


def cmd_info(args: argparse.Namespace) -> int:
    from p2p.identity import key_path, load_identity, peer_id_of
    from p2p.node import INFO_FILE

    data_dir: Path = args.data_dir
    if not key_path(data_dir).exists():
        return _fail(f"{data_dir} has no p2p key: run `castnet node start --data-dir {data_dir}`")
    try:
        peer_id = peer_id_of(load_identity(data_dir)).to_base58()
    except P2PError as exc:
        return _fail(str(exc))
    info: dict[str, Any] = {"peer_id": peer_id, "key_file": str(key_path(data_dir))}
    last = data_dir / INFO_FILE
    if last.exists():
        recorded = json.loads(last.read_text())
        info["network"] = recorded.get("network")
        info["listen_addrs"] = recorded.get("addrs", [])
        for part in ("peers", "admission"):  # as the node last recorded them (while running)
            if part in recorded:
                info[part] = recorded[part]
    else:
        info["network"], info["listen_addrs"] = None, []
    if (data_dir / DB_NAME).exists():
        with EventStore.open_dir(data_dir) as store:
            info["events"] = store.count()
            info["authors"] = len(store.heads())
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"peer id:  {info['peer_id']}")
    print(f"key file: {info['key_file']}")
    print(f"network:  {info['network'] or '(never started)'}")
    print("listen addresses (last start):")
    for addr in info["listen_addrs"]:
        print(f"  {addr}")
    if "events" in info:
        print(f"events:   {info['events']} by {info['authors']} authors")
    if "peers" in info:
        peers = info["peers"]
        limit = peers.get("max") or "no limit"
        print(
            f"peers:    {peers.get('connected', 0)} connected (limit {limit}; "
            f"{peers.get('trimmed', 0)} trimmed), gossip mesh {peers.get('mesh', 0)} "
            f"(target {peers.get('target', 0)}); peer exchange dialled "
            f"{peers.get('exchange_dialed', 0)}, {peers.get('exchange_connected', 0)} connected"
        )
    if "admission" in info:
        held = info["admission"].get("held_back", {})
        shown = ", ".join(f"{n} {why}" for why, n in sorted(held.items())) or "none"
        print(f"admitted: {info['admission'].get('admitted', 0)} events; held back: {shown}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m node.cli.node start|info ...`, until the group is in COMMAND_GROUPS."""
    parser = argparse.ArgumentParser(prog="castnet")
    parser.add_argument("-v", "--verbose", action="store_true")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
