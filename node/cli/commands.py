"""Command groups of the `castnet` CLI. Each module exposes `register(subparsers)`; a parser it
adds sets `run=function(args) -> exit code` with `set_defaults`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from node.cli import (
    ai,
    audit,
    chain,
    demo,
    deposit,
    inference,
    live,
    log,
    media,
    node,
    run,
    stake,
    testnet,
    worker,
)

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

COMMAND_GROUPS: list[Register] = [
    log.register,
    audit.register,
    media.register,
    node.register,
    demo.register,
    run.register,
    inference.register,
    worker.register,
    live.register,
    ai.register,
    testnet.register,
    chain.register,
    stake.register,
    deposit.register,
]
