"""The `castnet` command line: one argparse tree, each command registered by its module in
`node/cli/` (see `commands.py`), and only the module of the command that runs is imported."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from node.cli.commands import COMMANDS, command_help, module_of
from node.errors import interrupted


def _command_in(argv: Sequence[str]) -> str | None:
    """The command `argv` names: its first word that is not a top-level option."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] = (), every: bool = False) -> argparse.ArgumentParser:
    """The parser for `argv`: the commands of the module `argv` names in full, the others by
    name and help only (enough for `castnet --help` and for argparse to name a wrong choice).
    `every=True` imports and registers every module."""
    parser = argparse.ArgumentParser(
        prog="castnet", description="castnet: a peer-to-peer video network node"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _command_in(argv)
    wanted = set(COMMANDS) if every else {module_of(chosen)} if chosen else set()
    registered: set[str] = set()
    for name, (module, _) in COMMANDS.items():
        if module in wanted:
            if module not in registered:
                importlib.import_module(module).register(sub)
                registered.add(module)
        else:
            sub.add_parser(name, help=command_help(name), add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.run(args) or 0)
    except BrokenPipeError:
        return 0
    except BaseException as exc:  # Ctrl-C, alone or inside trio's exception groups
        if not interrupted(exc):
            raise
        print(f"castnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
