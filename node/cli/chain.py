"""`castnet chain deploy|status|init-round|fund-account`: the protocol contracts on a JSON-RPC
chain; and what the stake and deposit commands share with them: the deployment file, whose key
signs, every transaction logged, and one clear line on stderr (exit 2) for every failure."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from requests import RequestException
from web3 import Web3
from web3.exceptions import Web3Exception

from chain.anvil import dev_key
from chain.client import TX_GAS, Chain, Protocol, ProtocolParams, deploy_protocol
from chain.errors import ChainError
from events.crypto import LocalKeySigner, parse_address, to_checksum
from node.amounts import AmountError, parse_amount, percent, readable
from node.cli.commands import command_help
from node.keystore import PASSWORD_ENV, KeystoreError, keystore_address, load_keystore
from node.keystore import resolve_password as password_from

log = logging.getLogger("castnet.chain")
DEFAULT_RPC = "http://127.0.0.1:8545"
POSITIVE_PARAMS = (
    ("--round-length", "round_length"),
    ("--unbonding-rounds", "unbonding_period_rounds"),
    ("--unlock-rounds", "unlock_period_rounds"),
    ("--max-active", "max_active"),
    ("--genesis-supply", "genesis_supply"),
)
# the minter's rates, parts per billion (Livepeer's units since LIP-34)
RATE_PARAMS = (
    ("--inflation-ppb", "inflation_ppb"),
    ("--inflation-change-ppb", "inflation_change_ppb"),
    ("--target-bonding-rate-ppb", "target_bonding_rate_ppb"),
)


class CommandError(Exception):
    """A user's mistake or a refusal: printed as one line, exit code 2."""


def parse_account(text: str, what: str = "address") -> bytes:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise CommandError(f"bad {what}: {exc}") from None


# -- chain, contracts and keys ---------------------------------------------------------------


class LoggedChain(Chain):
    """A chain client that logs every transaction it sends and keeps their receipts."""

    def __init__(self, w3: Web3, key: bytes, tester: Any = None) -> None:
        super().__init__(w3, key, tester)
        self.sent: list[dict[str, Any]] = []

    def send(
        self,
        key: bytes,
        to: str | None,
        data: bytes | str,
        value: int = 0,
        gas: int = TX_GAS,
        what: str = "transaction",
    ) -> Any:
        receipt = super().send(key, to, data, value, gas, what)
        tx, block, gas_used = receipt["transactionHash"], receipt["blockNumber"], receipt["gasUsed"]
        record = {"what": what, "tx": Web3.to_hex(tx), "block": block, "gas_used": gas_used}
        self.sent.append(record)
        log.info("%s: tx %s in block %d, gas used %d", what, record["tx"], block, gas_used)
        return receipt


def add_account_args(p: argparse.ArgumentParser) -> None:
    who = p.add_mutually_exclusive_group()
    who.add_argument("--keystore", type=Path, help="the account's encrypted keystore")
    who.add_argument("--dev", action="store_true", help="anvil's first pre-funded dev account")
    p.add_argument(
        "--password-file",
        type=Path,
        help=f"keystore password file (else ${PASSWORD_ENV}, else a prompt)",
    )


def add_chain_args(p: argparse.ArgumentParser, contracts: bool = True) -> None:
    p.add_argument(
        "--rpc",
        metavar="URL",
        help=f"JSON-RPC endpoint (default: the deployment's, else {DEFAULT_RPC})",
    )
    if contracts:
        p.add_argument(
            "--contracts",
            type=Path,
            required=True,
            metavar="FILE",
            help="deployment file written by `castnet chain deploy`",
        )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def signer_key(args: argparse.Namespace) -> bytes:
    """The private key that signs: a decrypted keystore or the anvil dev account."""
    if args.dev:
        return dev_key(0)
    if args.keystore is None:
        raise CommandError("name the signing account: --keystore FILE or --dev")
    return load_keystore(args.keystore, password_from(args.password_file, os.environ))


def account_of(args: argparse.Namespace, given: str | None) -> bytes:
    """The account a status command reads: ADDRESS, else the keystore's (no password), else dev."""
    if given:
        return parse_account(given)
    if args.keystore is not None:
        return keystore_address(args.keystore)
    if args.dev:
        return LocalKeySigner(dev_key(0)).address
    raise CommandError("name an ADDRESS, --keystore FILE or --dev")


def read_deployment(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise CommandError(
            f"{path}: no such deployment file (write one with `castnet chain deploy`)"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CommandError(f"{path}: not a castnet deployment file: {exc}") from None
    contracts = document.get("contracts") if isinstance(document, dict) else None
    if not isinstance(contracts, dict):
        raise CommandError(f"{path}: not a castnet deployment file: no contract addresses")
    return document


def connect(args: argparse.Namespace, key: bytes | None = None) -> Protocol:
    """The deployment's contracts on the chain of --rpc (else the file's), checked to be there."""
    deployment = read_deployment(args.contracts)
    url = args.rpc or deployment.get("rpc") or DEFAULT_RPC
    chain = LoggedChain.rpc(url, key or dev_key(0))
    expected = deployment.get("chain_id")
    if isinstance(expected, int) and expected != chain.chain_id:
        raise CommandError(
            f"{args.contracts} is a deployment on chain {expected}, but {url} "
            f"is chain {chain.chain_id}"
        )
    return Protocol.at(chain, deployment["contracts"])


def transactions(protocol: Protocol) -> list[dict[str, Any]]:
    """The transactions sent through `connect`'s chain so far (hash, block, gas used)."""
    return list(getattr(protocol.chain, "sent", []))


def guarded(command: str, run: Callable[[argparse.Namespace], tuple[dict[str, Any], str]]) -> Any:
    """Wrap a command returning (JSON result, text) so that every failure is one stderr line."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            result, text = run(args)
        except (CommandError, AmountError, ChainError, KeystoreError) as exc:
            return fail(command, str(exc))
        except (Web3Exception, RequestException) as exc:  # RequestException is an OSError
            return fail(command, f"chain call failed: {exc}")
        except OSError as exc:
            return fail(command, str(exc))
        print(json.dumps(result) if args.json else text, flush=True)
        return 0

    return wrapped


def fail(command: str, message: str) -> int:
    print(f"castnet {command}: {message}", file=sys.stderr, flush=True)
    return 2


# -- chain commands --------------------------------------------------------------------------


def register(sub: Any) -> None:
    group = sub.add_parser("chain", help=command_help("chain"))
    cmds = group.add_subparsers(dest="chain_command", required=True, metavar="ACTION")

    p = cmds.add_parser("deploy", help="deploy every contract and write the deployment file")
    p.add_argument("--out", type=Path, required=True, help="deployment file (JSON) to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    defaults = ProtocolParams()
    for flag, field in (*POSITIVE_PARAMS, *RATE_PARAMS):
        p.add_argument(
            flag,
            type=int,
            dest=field,
            default=getattr(defaults, field),
            help="(default %(default)s)",
        )
    add_chain_args(p, contracts=False)
    add_account_args(p)
    p.set_defaults(run=guarded("chain deploy", cmd_deploy))

    p = cmds.add_parser("status", help="block, round, active set and stakes")
    add_chain_args(p)
    p.set_defaults(run=guarded("chain status", cmd_status))

    p = cmds.add_parser("init-round", help="initialize the current round (anyone may)")
    add_chain_args(p)
    add_account_args(p)
    p.set_defaults(run=guarded("chain init-round", cmd_init_round))

    p = cmds.add_parser("fund-account", help="send gas money and stake token from the deployer")
    p.add_argument("address", help="the account to fund")
    p.add_argument("--eth", default="0eth", help="ETH to send, with its unit: 1.5eth, 2gwei")
    p.add_argument("--tokens", default="0cast", help="stake token to send, with its unit: 10cast")
    add_chain_args(p)
    add_account_args(p)
    p.set_defaults(run=guarded("chain fund-account", cmd_fund_account))

    p = cmds.add_parser("anvil", help="run a local anvil chain until Ctrl-C (make testnet-deps)")
    p.add_argument("--port", type=int, default=8545, help="on 127.0.0.1 (default %(default)s)")
    p.add_argument("--block-time", type=float, help="seconds per block (default: one per tx)")
    p.set_defaults(run=cmd_anvil)


def cmd_anvil(args: argparse.Namespace) -> int:
    """Anvil in the foreground: started on 127.0.0.1, stopped by its own pid on Ctrl-C/SIGTERM."""
    import signal
    import threading

    from chain.anvil import Anvil
    from chain.errors import ChainError

    try:
        node = Anvil.start(port=args.port, block_time=args.block_time)
    except ChainError as exc:
        print(f"castnet chain anvil: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with node:
        print(f"anvil on http://127.0.0.1:{args.port} (pid {node.process.pid}); Ctrl-C stops it",
              flush=True)  # fmt: skip
        while not stop.wait(0.5) and node.process.poll() is None:
            pass
    return 0


def cmd_deploy(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    if args.out.exists() and not args.force:
        raise CommandError(f"{args.out} exists: pass --force to overwrite it")
    for flag, field in POSITIVE_PARAMS:
        if getattr(args, field) <= 0:
            raise CommandError(f"{flag} must be positive")
    for flag, field in RATE_PARAMS:
        if not 0 <= getattr(args, field) <= 10**9:
            raise CommandError(f"{flag} must be between 0 and 1000000000")
    fields = [field for _, field in (*POSITIVE_PARAMS, *RATE_PARAMS)]
    params = ProtocolParams(**{field: getattr(args, field) for field in fields})
    key = signer_key(args)
    url = args.rpc or DEFAULT_RPC
    chain = LoggedChain.rpc(url, key)
    protocol = deploy_protocol(chain, key, params)
    sent = transactions(protocol)
    document = {
        "chain_id": chain.chain_id,
        "rpc": url,
        "contracts": protocol.addresses(),
        "params": asdict(params),
        "deployed_block": sent[0]["block"],
        "deployer": to_checksum(LocalKeySigner(key).address),
    }
    write_atomically(args.out, json.dumps(document, indent=2) + "\n")
    lines = [
        f"deployed on chain {chain.chain_id} ({url}) from block {sent[0]['block']}, "
        f"{sum(t['gas_used'] for t in sent):,} gas; wrote {args.out}"
    ]
    lines += [f"  {name:<12} {address}" for name, address in document["contracts"].items()]
    return {**document, "file": str(args.out), "transactions": sent}, "\n".join(lines)


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def pending_round(protocol: Protocol) -> int:
    """The round a transaction sent now runs in (its block is the pending one)."""
    return int(protocol.rounds.functions.currentRound().call(block_identifier="pending"))


def cmd_status(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    protocol = connect(args)
    view, staking = protocol.view(), protocol.staking
    active: list[dict[str, Any]] = []
    for address in staking.active_set():
        o = staking.orchestrator(address)
        active.append(
            {
                "address": to_checksum(address),
                "stake": o.stake,
                "round_stake": o.round_stake,
                "active_this_round": o.active,
                "reward_cut_ppm": o.reward_cut,
                "fee_share_ppm": o.fee_share,
                "last_reward_round": o.last_reward_round,
            }
        )
    initialized = bool(protocol.rounds.functions.currentRoundInitialized().call())
    total = staking.total_active_stake()
    m = staking.minter(view.round)
    minter = {
        "inflation_ppb": m.inflation,
        "inflation_change_ppb": m.inflation_change,
        "target_bonding_rate_ppb": m.target_bonding_rate,
        "round_fixed": m.fixed,
        "round_inflation_ppb": m.round_inflation,
        "round_bonding_rate_ppb": m.bonding_rate,
        "round_active_stake": m.active_stake,
        "round_mintable": m.mintable,
        "round_minted": m.minted,
        "total_supply": m.total_supply,
    }
    result = {
        "chain_id": protocol.chain.chain_id,
        "block": view.block,
        "round": view.round,
        "round_initialized": initialized,
        "pool_size": view.pool_size,
        "total_active_stake": total,
        "active": active,
        "minter": minter,
        "contracts": protocol.addresses(),
    }
    lines = [
        f"chain {protocol.chain.chain_id}: block {view.block}, round {view.round} "
        f"({'initialized' if initialized else 'not initialized'}), pool size "
        f"{view.pool_size}",
        f"active orchestrators: {len(active)}, total stake {readable(total)}",
        f"minter: inflation {m.round_inflation / 10**7:g}% this round (moves "
        f"{m.inflation_change / 10**7:g}% a round toward {m.target_bonding_rate / 10**7:g}% "
        f"bonded; bonded now {m.bonding_rate / 10**7:g}%), mintable {readable(m.mintable)}, "
        f"minted {readable(m.minted)}, supply {readable(m.total_supply)}",
    ]
    lines += [
        f"  {o['address']} stake {readable(o['stake'])} ({readable(o['round_stake'])} this round), "
        f"reward cut "
        f"{percent(o['reward_cut_ppm'])}, fee share {percent(o['fee_share_ppm'])}, "
        f"last reward round {o['last_reward_round']}"
        for o in active
    ]
    return result, "\n".join(lines)


def cmd_init_round(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    key = signer_key(args)
    protocol = connect(args, key)
    current = pending_round(protocol)
    done = protocol.round_initialized()
    if not done:
        protocol.initialize_round(key)
    text = f"round {current} {'was already' if done else 'is now'} initialized"
    return {
        "round": current,
        "initialized_now": not done,
        "transactions": transactions(protocol),
    }, text


def cmd_fund_account(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    to = parse_account(args.address)
    eth = parse_amount(args.eth, "--eth", allow_zero=True)
    tokens = parse_amount(args.tokens, "--tokens", allow_zero=True, unit="cast")
    if not eth and not tokens:
        raise CommandError("nothing to send: give --eth N and/or --tokens N")
    key = signer_key(args)
    protocol = connect(args, key)
    if eth:
        protocol.chain.transfer(key, to, eth)
    if tokens:
        protocol.staking.transfer_tokens(key, to, tokens)
    balance, held = protocol.chain.balance(to), protocol.staking.token_balance(to)
    text = (
        f"sent {readable(eth, 'ETH')} and {readable(tokens)} to {to_checksum(to)}; it holds "
        f"{readable(balance, 'ETH')} and {readable(held)}"
    )
    return {
        "address": to_checksum(to),
        "eth": eth,
        "tokens": tokens,
        "balance": balance,
        "token_balance": held,
        "transactions": transactions(protocol),
    }, text
