"""Commands of the `castnet` CLI and the module that registers each one.

A command's module is imported only when that command runs (or asks for its own `--help`): the
modules import libp2p, web3, PyAV or onnxruntime, which take seconds, and `castnet --help` needs
none of them. Each module exposes `register(subparsers)`, which adds the commands this table maps
to it (with `command_help(name)` as their help); a parser it adds sets
`run=function(args) -> exit code` with `set_defaults`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from node.amounts import AmountError, parse_amount

# command -> (module that registers it, one-line help); the order is the order of `castnet --help`
COMMANDS: dict[str, tuple[str, str]] = {
    "log": ("node.cli.log", "create, import, export and show signed event logs"),
    "audit": (
        "node.cli.audit",
        "verify a log: its integrity, evidence against others, its chain events",
    ),
    "media": ("node.cli.media", "transcode to an HLS ladder and verify outputs, locally"),
    "node": ("node.cli.node", "run a p2p node, show its identity"),
    "demo": ("node.cli.demo", "run the whole network in one process on a clip"),
    "run": ("node.cli.run", "run a node with roles until SIGINT/SIGTERM"),
    "keys": ("node.cli.run", "create or show encrypted wallet keystores"),
    "inference": ("node.cli.inference", "run ONNX models on video frames, locally"),
    "worker": ("node.cli.worker", "attach to an orchestrator and compute its segments"),
    "live": ("node.cli.live", "publish a live HLS playlist from a stream URL"),
    "ai": ("node.cli.ai", "run an inference pipeline on the network (in-process)"),
    "testnet": ("node.cli.testnet", "a local multi-process testnet on anvil"),
    "chain": ("node.cli.chain", "deploy the protocol contracts and inspect the chain"),
    "stake": ("node.cli.stake", "bond, delegate, unbond and claim on the bonding contract"),
    "deposit": ("node.cli.deposit", "a gateway's deposit and reserve on the ticket broker"),
}


def command_help(command: str) -> str:
    """The one-line help of `command`, as `castnet --help` lists it."""
    return COMMANDS[command][1]


def module_of(command: str) -> str:
    return COMMANDS[command][0]


def amount_arg(unit: str) -> Callable[[str], int]:
    """An argparse `type` for an amount with its unit (`20gwei`, `0.002eth`): wei, or argparse's
    error with the hint when the unit is missing or wrong."""

    def parse(text: str) -> int:
        try:
            return parse_amount(text, "amount", unit=unit)
        except AmountError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse
