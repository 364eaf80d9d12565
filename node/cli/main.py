"""The `castnet` command line: one argparse tree, each command group in `node/cli/`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from node.cli.commands import COMMAND_GROUPS
from node.errors import interrupted


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="castnet", description="castnet: a peer-to-peer video network node"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in COMMAND_GROUPS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
