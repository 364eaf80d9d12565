"""`castnet deposit fund|reserve|unlock|cancel-unlock|withdraw|status`: a gateway's deposit and
reserve on the ticket broker, which back its payment tickets (see node/cli/chain.py for the
shared flags)."""

from __future__ import annotations

import argparse
from typing import Any

from chain.client import Protocol
from chain.errors import AccountLocked
from events.crypto import to_checksum
from node.amounts import parse_amount, readable
from node.cli.chain import CommandError, account_of, connect, pending_round
from node.cli.commands import command_help
from node.cli.stake import Result, add_actions, done, signed

ETH_AMOUNT = {"help": "ETH with its unit: 1eth, 0.5eth, 2gwei"}


def register(sub: Any) -> None:
    group = sub.add_parser("deposit", help=command_help("deposit"))
    cmds = group.add_subparsers(dest="deposit_command", required=True, metavar="ACTION")
    specs: list[tuple[str, str, Any, list[Any]]] = [
        ("fund", "add ETH to the deposit", cmd_fund, [("amount", ETH_AMOUNT)]),
        ("reserve", "add ETH to the reserve", cmd_fund, [("amount", ETH_AMOUNT)]),
        ("unlock", "start the unlock period before a withdrawal", cmd_unlock, []),
        ("cancel-unlock", "stop unlocking", cmd_cancel_unlock, []),
        ("withdraw", "withdraw deposit and reserve once unlocked", cmd_withdraw, []),
        ("status", "deposit, reserve and unlock state", cmd_status, [("address", {"nargs": "?"})]),
    ]
    add_actions(cmds, "deposit", specs)


def _funds(protocol: Protocol, who: bytes) -> dict[str, Any]:
    info, current = protocol.sender_info(who, who), pending_round(protocol)
    unlocking = info.withdraw_round != 0
    return {
        "address": to_checksum(who),
        "round": current,
        "deposit": info.deposit,
        "reserve": info.reserve,
        "withdraw_round": info.withdraw_round or None,
        "withdrawable": unlocking and info.withdraw_round <= current,
        "eth": protocol.chain.balance(who),
    }


def _funds_text(f: dict[str, Any]) -> str:
    state = "locked"
    if f["withdraw_round"] is not None:
        state = f"unlocking: withdrawable from round {f['withdraw_round']}"
        state += " (now)" if f["withdrawable"] else f" (now round {f['round']})"
    return (
        f"deposit {readable(f['deposit'], 'ETH')}, reserve {readable(f['reserve'], 'ETH')}, "
        f"{state}; {readable(f['eth'], 'ETH')} in the account"
    )


def cmd_fund(args: argparse.Namespace) -> Result:
    amount = parse_amount(args.amount)
    key, me, protocol = signed(args)
    if args.action == "fund":
        protocol.fund_deposit(key, amount)
    else:
        protocol.fund_reserve(key, amount)
    funds = _funds(protocol, me)
    what = "deposit" if args.action == "fund" else "reserve"
    return done(
        protocol, f"added {readable(amount, 'ETH')} to the {what}: {_funds_text(funds)}", **funds
    )


def cmd_unlock(args: argparse.Namespace) -> Result:
    key, me, protocol = signed(args)
    protocol.unlock(key)
    funds = _funds(protocol, me)
    return done(protocol, f"unlock started: {_funds_text(funds)}", **funds)


def cmd_cancel_unlock(args: argparse.Namespace) -> Result:
    key, me, protocol = signed(args)
    protocol.cancel_unlock(key)
    funds = _funds(protocol, me)
    return done(protocol, f"unlock cancelled: {_funds_text(funds)}", **funds)


def cmd_withdraw(args: argparse.Namespace) -> Result:
    key, me, protocol = signed(args)
    before = _funds(protocol, me)
    try:
        protocol.withdraw(key)
    except AccountLocked as exc:
        hint = "run `castnet deposit unlock` first"
        if before["withdraw_round"] is not None:
            hint = (
                f"withdrawable from round {before['withdraw_round']}, now round {before['round']}"
            )
        raise CommandError(f"{exc}: {hint}") from None
    amount = before["deposit"] + before["reserve"]
    return done(
        protocol,
        f"withdrew {readable(amount, 'ETH')} (deposit and reserve)",
        withdrawn=amount,
        **_funds(protocol, me),
    )


def cmd_status(args: argparse.Namespace) -> Result:
    who = account_of(args, args.address)
    funds = _funds(connect(args), who)
    return funds, f"{funds['address']}: {_funds_text(funds)}"
