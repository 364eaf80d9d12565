"""`castnet run`: a long-lived node with roles (gateway, orchestrator, delegator) from a TOML config
and flags, until SIGINT/SIGTERM; `castnet keys new|show`: its encrypted wallet keystores."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import trio

from events.crypto import to_checksum
from node.cli.commands import command_help
from node.cli.heap import freeze_startup_heap
from node.cli.stopping import stop_on_signal
from node.config import (
    ADMIT_MODES,
    LEDGER_KINDS,
    ROLES,
    VERIFY_POLICIES,
    ConfigError,
    NodeConfig,
    load_config,
)
from node.errors import NO_CHAIN, ServiceError, user_error
from node.keystore import (
    KDFS,
    PASSWORD_ENV,
    KeystoreError,
    create_keystore,
    keystore_address,
    load_keystore,
    resolve_password,
)
from p2p.errors import P2PError
from storage.errors import StorageError

log = logging.getLogger("castnet.run")
QUIET = ("castnet.p2p", "castnet.gateway", "castnet.orchestrator", "castnet.api", "libp2p")


def register(sub: Any) -> None:
    p = sub.add_parser("run", help=command_help("run"))
    p.add_argument("--config", type=Path, help="TOML config file (flags override it)")
    p.add_argument("--role", action="append", choices=ROLES, help="role (repeatable)")
    p.add_argument("--data-dir", type=Path, help="where logs, keys and jobs live")
    p.add_argument("--listen", action="append", metavar="MULTIADDR", help="p2p listen address")
    p.add_argument("--bootstrap", nargs="+", action="extend", metavar="MULTIADDR",
                   help="peers to dial: /ip4/../tcp/../p2p/<peer id>")  # fmt: skip
    p.add_argument("--network", help="network id")
    p.add_argument("--admit", choices=ADMIT_MODES,
                   help="events stored and forwarded: of authors with standing (the default) or "
                   "of every author (open, a private LAN)")  # fmt: skip
    p.add_argument("--api-listen", metavar="HOST:PORT", help="gateway HTTP API address")
    p.add_argument("--api-token-file", type=Path, help="bearer token for the HTTP API")
    p.add_argument("--no-api", action="store_true", help="gateway without the HTTP API")
    p.add_argument("--price-per-pixel", help="orchestrator price, wei per pixel (e.g. 1000)")
    p.add_argument("--capacity", type=int, help="orchestrator: segments at once")
    p.add_argument("--profiles", help="gateway default ladder, e.g. 720p,480p,360p")
    p.add_argument("--verify", choices=VERIFY_POLICIES,
                   help="gateway: full checks on every segment (all) or sampled")  # fmt: skip
    p.add_argument(
        "--ledger",
        choices=LEDGER_KINDS,
        help="chain: embedded (in-process EVM) or rpc (ledger.rpc_url + contracts)",
    )
    _password_args(p)
    p.add_argument("--init-keys", action="store_true", help="create missing role keystores")
    p.set_defaults(run=cmd_run)

    group = sub.add_parser("keys", help=command_help("keys"))
    cmds = group.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    p = cmds.add_parser("new", help="create a keystore (one per role of a config, or --out)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="create the missing keystores of its roles")
    where.add_argument("--out", type=Path, help="create one keystore at this path")
    p.add_argument("--data-dir", type=Path, help="with --config: override its data_dir")
    p.add_argument("--kdf", choices=KDFS, default="scrypt", help="key derivation (%(default)s)")
    p.add_argument("--work", type=int, help="scrypt n / pbkdf2 iterations (eth-account default)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _password_args(p)
    p.set_defaults(run=cmd_keys_new)

    p = cmds.add_parser("show", help="print the address of keystores (no password needed)")
    p.add_argument("files", nargs="*", type=Path, help="keystore files")
    p.add_argument("--config", type=Path, help="the keystores of a config's roles")
    p.add_argument("--data-dir", type=Path, help="with --config: override its data_dir")
    p.add_argument("--check", action="store_true", help="also decrypt, to check the password")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _password_args(p)
    p.set_defaults(run=cmd_keys_show)


def _password_args(p: argparse.ArgumentParser) -> None:
    hint = f"keystore password file (else ${PASSWORD_ENV}, else a prompt)"
    p.add_argument("--password-file", type=Path, help=hint)


def _fail(command: str, message: str) -> int:
    print(f"castnet {command}: {message}", file=sys.stderr)
    return 2


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that were given, in the config file's shape."""
    data_dir = str(args.data_dir.resolve()) if args.data_dir else None
    return {
        "roles": args.role,
        "data_dir": data_dir,
        "p2p": {
            "listen": args.listen,
            "bootstrap": args.bootstrap,
            "network": args.network,
            "admit": args.admit,
        },
        "api": {
            "listen": args.api_listen,
            "token_file": str(args.api_token_file.resolve()) if args.api_token_file else None,
            "enabled": False if args.no_api else None,
        },
        "orchestrator": {"price_per_pixel": args.price_per_pixel, "capacity": args.capacity},
        "gateway": {"profiles": args.profiles, "verify": args.verify},
        "ledger": {"kind": args.ledger},
    }


def cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, overrides(args))
        if not config.ledger.kind:
            return _fail("run", NO_CHAIN)
        password = resolve_password(args.password_file, os.environ)
        if args.init_keys:
            for role, path, address in ensure_keystores(config, password):
                print(f"created {role} keystore {path} ({to_checksum(address)})", flush=True)
        keys = {role: load_keystore(config.keystore(role), password) for role in config.roles}
    except (ConfigError, KeystoreError) as exc:
        return _fail("run", str(exc))
    if not args.verbose:
        for name in QUIET:
            logging.getLogger(name).setLevel(logging.WARNING)
    from p2p.host import quiet_libp2p  # the node's stack: imported once the config is good

    # a failure that matters surfaces as our own one-line error; -v shows libp2p's own logs
    quiet_libp2p(logging.WARNING if args.verbose else logging.CRITICAL)
    try:
        trio.run(serve, config, keys)
    except BaseException as exc:  # the user's error is shown, anything else raised
        shown = user_error(exc, (ServiceError, ConfigError, P2PError, StorageError, OSError))
        if shown is None:
            raise
        return _fail("run", str(shown))
    return 0


async def serve(config: NodeConfig, keys: dict[str, bytes]) -> None:
    """Run until the first SIGINT or SIGTERM, then stop every role cleanly."""
    from node.service import NodeService

    with stop_on_signal() as stopper:
        async with trio.open_nursery() as nursery:
            service = await nursery.start(NodeService(config, keys).run)
            frozen = freeze_startup_heap()
            log.debug("%d objects made by the start left out of garbage collection", frozen)
            status = service.status()
            print(f"castnet node pid {status['pid']} on network {status['network']} "
                  f"(ledger: {status['ledger']})", flush=True)  # fmt: skip
            for role, info in status["roles"].items():
                print(f"{role} {info['address']} peer {info['peer_id']}", flush=True)
                for addr in info["addrs"]:
                    print(f"  listening {addr}", flush=True)
            if "api" in status:
                print(f"api {status['api']}", flush=True)
                if service.api_token_created:  # shown once, like a notebook server's token
                    print(f"API token (new, kept in {service.api_token_file}): "
                          f"{service.api_token}", flush=True)  # fmt: skip
                elif service.api_token_file is not None:
                    print(f"API token in {service.api_token_file}", flush=True)
                page = f"{status['api']}/" + ("?token=TOKEN" if service.api_token else "")
                print(f"dashboard {page}", flush=True)
            if "metrics" in status:
                print(f"metrics {status['metrics']}", flush=True)
            if service.resumed_jobs:
                print(f"resumed {service.resumed_jobs} unfinished job(s)", flush=True)
            print("ready", flush=True)
            await stopper.wait(nursery.cancel_scope)
    print("stopped", flush=True)


def ensure_keystores(
    config: NodeConfig, password: str, kdf: str = "scrypt", work: int | None = None
) -> list[tuple[str, Path, bytes]]:
    """Create the keystore of every role that has none; returns what was created."""
    created = []
    for role in config.roles:
        path = config.keystore(role)
        if not path.exists():
            created.append((role, path, create_keystore(path, password, kdf=kdf, work=work)))
    return created


def _keys_config(args: argparse.Namespace) -> NodeConfig:
    data_dir = str(args.data_dir.resolve()) if args.data_dir else None
    return load_config(args.config, {"data_dir": data_dir})


def cmd_keys_new(args: argparse.Namespace) -> int:
    try:
        password = resolve_password(args.password_file, os.environ, confirm=True)
        if args.out is not None:
            address = create_keystore(args.out, password, kdf=args.kdf, work=args.work)
            made = [("", args.out, address)]
        else:
            made = ensure_keystores(_keys_config(args), password, args.kdf, args.work)
    except (ConfigError, KeystoreError) as exc:
        return _fail("keys new", str(exc))
    rows = [{"role": r, "path": str(p), "address": to_checksum(a)} for r, p, a in made]
    if args.json:
        print(json.dumps({"created": rows}))
    else:
        for row in rows:
            print(f"{row['role'] or 'key'} {row['address']} {row['path']}")
        if not rows:
            print("every role already has a keystore")
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    try:
        entries: list[tuple[str, Path]] = [("", f) for f in args.files]
        if args.config is not None:
            config = _keys_config(args)
            entries += [(role, config.keystore(role)) for role in config.roles]
        if not entries:
            return _fail("keys show", "name keystore files or --config FILE")
        password = resolve_password(args.password_file, os.environ) if args.check else None
        rows = []
        for role, path in entries:
            address = keystore_address(path)
            if password is not None:
                load_keystore(path, password)
            rows.append({"role": role, "path": str(path), "address": to_checksum(address)})
    except (ConfigError, KeystoreError) as exc:
        return _fail("keys show", str(exc))
    if args.json:
        print(json.dumps({"keys": rows, "checked": bool(args.check)}))
    else:
        for row in rows:
            print(f"{row['role'] or 'key'} {row['address']} {row['path']}")
    return 0
