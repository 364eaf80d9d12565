"""`castnet stake ...`: an operator's self-bond, registration and rewards, a delegator's bond, and
both one's unbonding locks and fees on the bonding contract, signed by a keystore account or
anvil's dev account (see node/cli/chain.py for the shared flags)."""

from __future__ import annotations

import argparse
from typing import Any

from chain.client import Protocol
from chain.errors import StakeLocked
from chain.staking import OrchestratorInfo
from events.crypto import LocalKeySigner, to_checksum
from node.amounts import parse_amount, parse_percent, percent, readable
from node.cli.chain import (
    CommandError,
    account_of,
    add_account_args,
    add_chain_args,
    connect,
    guarded,
    parse_account,
    pending_round,
    signer_key,
    transactions,
)
from node.cli.commands import command_help

Result = tuple[dict[str, Any], str]
CAST_AMOUNT = {"help": "stake token with its unit: 100cast (or wei: 10wei)"}


def register(sub: Any) -> None:
    group = sub.add_parser("stake", help=command_help("stake"))
    cmds = group.add_subparsers(dest="stake_command", required=True, metavar="ACTION")
    specs: list[tuple[str, str, Any, list[tuple[str, dict[str, Any]]]]] = [
        (
            "bond",
            "bond stake token (to yourself unless --to: an operator's self-bond)",
            cmd_bond,
            [("amount", CAST_AMOUNT), ("--to", {"metavar": "ORCH"})],
        ),
        (
            "delegate",
            "bond stake token to an orchestrator",
            cmd_bond,
            [("amount", CAST_AMOUNT), ("--to", {"metavar": "ORCH", "required": True})],
        ),
        (
            "register",
            "register (or update) as an orchestrator",
            cmd_register,
            [
                ("--reward-cut", {"required": True, "metavar": "PCT"}),
                ("--fee-share", {"required": True, "metavar": "PCT"}),
            ],
        ),
        ("unbond", "move stake into an unbonding lock", cmd_unbond, [("amount", CAST_AMOUNT)]),
        (
            "rebond",
            "return an unbonding lock to the bond",
            cmd_rebond,
            [("lock_id", {"type": int}), ("--to", {"metavar": "ORCH"})],
        ),
        (
            "withdraw",
            "withdraw an unbonding lock after its period",
            cmd_withdraw,
            [("lock_id", {"type": int})],
        ),
        ("withdraw-fees", "withdraw the fees earned", cmd_withdraw_fees, []),
        ("reward", "claim this round's reward (an active orchestrator)", cmd_reward, []),
        (
            "status",
            "bond, pending rewards, fees, locks and registration",
            cmd_stake_status,
            [("address", {"nargs": "?"})],
        ),
    ]
    add_actions(cmds, "stake", specs)


def add_actions(cmds: Any, group: str, specs: list[tuple[str, str, Any, list[Any]]]) -> None:
    for name, help_text, run, arguments in specs:
        p = cmds.add_parser(name, help=help_text)
        for flag, options in arguments:
            p.add_argument(flag, **options)
        add_chain_args(p)
        add_account_args(p)
        p.set_defaults(run=guarded(f"{group} {name}", run), action=name)


def signed(args: argparse.Namespace) -> tuple[bytes, bytes, Protocol]:
    key = signer_key(args)
    return key, LocalKeySigner(key).address, connect(args, key)


def done(protocol: Protocol, text: str, **result: Any) -> Result:
    return {**result, "transactions": transactions(protocol)}, text


# -- stake -----------------------------------------------------------------------------------


def cmd_bond(args: argparse.Namespace) -> Result:
    amount = parse_amount(args.amount, allow_zero=args.to is not None, unit="cast")
    key, me, protocol = signed(args)
    to = parse_account(args.to, "--to") if args.to else me
    protocol.staking.bond(key, amount, to)
    bonded = protocol.staking.delegator(me).bonded
    target = "yourself" if to == me else to_checksum(to)
    return done(
        protocol,
        f"bonded {readable(amount)} to {target}; bonded now {readable(bonded)}",
        amount=amount,
        to=to_checksum(to),
        bonded=bonded,
    )


def cmd_register(args: argparse.Namespace) -> Result:
    cut = parse_percent(args.reward_cut, "--reward-cut")
    share = parse_percent(args.fee_share, "--fee-share")
    key, me, protocol = signed(args)
    protocol.staking.register(key, cut, share)
    o = protocol.staking.orchestrator(me)
    text = (
        f"registered {to_checksum(me)}: reward cut {percent(cut)}, fee share "
        f"{percent(share)}, stake {readable(o.stake)}, {_activity(o)}"
    )
    return done(
        protocol,
        text,
        reward_cut_ppm=cut,
        fee_share_ppm=share,
        stake=o.stake,
        active=o.active,
        in_pool=o.in_pool,
    )
    return done(protocol, text, reward_cut_ppm=cut, fee_share_ppm=share, stake=o.stake,
                active=o.active, in_pool=o.in_pool)  # fmt: skip


def _activity(o: OrchestratorInfo) -> str:
    """Active this round, or in the pool (active from the next round), or neither."""
    if o.active:
        return "active" if o.in_pool else "active until this round ends"
    return "active from the next round" if o.in_pool else "not active"


def cmd_unbond(args: argparse.Namespace) -> Result:
    amount = parse_amount(args.amount, unit="cast")
    key, me, protocol = signed(args)
    lock_id = protocol.staking.unbond(key, amount)
    lock = next(x for x in protocol.staking.delegator(me).locks if x.lock_id == lock_id)
    text = (
        f"unbonded {readable(amount)}: lock {lock_id}, withdrawable from round"
        f" {lock.withdraw_round}"
    )
    return done(protocol, text, lock_id=lock_id, amount=amount, withdraw_round=lock.withdraw_round)


def cmd_rebond(args: argparse.Namespace) -> Result:
    key, me, protocol = signed(args)
    delegate = protocol.staking.delegator(me).delegate
    to = parse_account(args.to, "--to") if args.to else delegate
    if to is None:
        raise CommandError(
            "not bonded any more: name the orchestrator with --to ORCH "
            "(your own address to bond to yourself)"
        )
    if delegate is None:
        protocol.staking.rebond_from_unbonded(key, to, args.lock_id)
    elif to != delegate:
        raise CommandError(
            f"bonded to {to_checksum(delegate)}: a lock returns to it; "
            "--to works only once the whole stake is unbonded"
        )
    else:
        protocol.staking.rebond(key, args.lock_id)
    bonded = protocol.staking.delegator(me).bonded
    return done(
        protocol,
        f"rebonded lock {args.lock_id} to {to_checksum(to)}; bonded now {readable(bonded)}",
        lock_id=args.lock_id,
        to=to_checksum(to),
        bonded=bonded,
    )


def cmd_withdraw(args: argparse.Namespace) -> Result:
    key, me, protocol = signed(args)
    locks = {lock.lock_id: lock for lock in protocol.staking.delegator(me).locks}
    if args.lock_id not in locks:
        raise CommandError(
            f"no unbonding lock {args.lock_id} (locks: {', '.join(map(str, locks)) or 'none'})"
        )
    lock = locks[args.lock_id]
    try:
        protocol.staking.withdraw_stake(key, args.lock_id)
    except StakeLocked as exc:
        raise CommandError(
            f"{exc}: lock {lock.lock_id} is withdrawable from round "
            f"{lock.withdraw_round}, now round {pending_round(protocol)}"
        ) from None
    return done(
        protocol,
        f"withdrew lock {lock.lock_id}: {readable(lock.amount)}",
        lock_id=lock.lock_id,
        amount=lock.amount,
    )


def cmd_withdraw_fees(args: argparse.Namespace) -> Result:
    key, me, protocol = signed(args)
    fees = protocol.staking.delegator(me).fees
    protocol.staking.withdraw_fees(key)
    return done(protocol, f"withdrew {readable(fees, 'ETH')} of fees", fees=fees)


def cmd_reward(args: argparse.Namespace) -> Result:
    key, me, protocol = signed(args)
    info = protocol.staking.orchestrator(me)
    if not (info.registered and info.active):
        state = "not in the active set" if info.registered else "not a registered orchestrator"
        raise CommandError(f"{to_checksum(me)} is {state}: no reward to claim")
    before = info.stake
    protocol.ensure_round(key)  # reward needs the round initialized; anyone may do it
    protocol.staking.reward(key)
    after = protocol.staking.orchestrator(me)
    text = (
        f"rewarded in round {after.last_reward_round}: stake {readable(before)} -> "
        f"{readable(after.stake)} (+{readable(after.stake - before)})"
    )
    return done(
        protocol,
        text,
        round=after.last_reward_round,
        minted=after.stake - before,
        stake=after.stake,
    )


def cmd_stake_status(args: argparse.Namespace) -> Result:
    who = account_of(args, args.address)
    protocol = connect(args)
    d, o = protocol.staking.delegator(who), protocol.staking.orchestrator(who)
    current = pending_round(protocol)
    locks = [
        {
            "lock_id": x.lock_id,
            "amount": x.amount,
            "withdraw_round": x.withdraw_round,
            "withdrawable": x.withdraw_round <= current,
        }
        for x in d.locks
    ]
    result: dict[str, Any] = {
        "address": to_checksum(who),
        "round": current,
        "tokens": d.tokens,
        "bonded": d.bonded,
        "delegate": to_checksum(d.delegate) if d.delegate else None,
        "fees": d.fees,
        "locks": locks,
        "eth": protocol.chain.balance(who),
    }
    target = "nobody" if d.delegate is None else to_checksum(d.delegate)
    lines = [
        f"{to_checksum(who)} in round {current}: {readable(d.tokens)} and "
        f"{readable(result['eth'], 'ETH')} in the account",
        f"bonded {readable(d.bonded)} (pending rewards included) to "
        f"{'itself' if d.delegate == who else target}",
        f"fees {readable(d.fees, 'ETH')}",
    ]
    lines += [
        f"lock {x['lock_id']}: {readable(x['amount'])}, withdrawable from round "
        f"{x['withdraw_round']}{' (now)' if x['withdrawable'] else ''}"
        for x in locks
    ]
    if o.registered or o.stake:
        result["orchestrator"] = {
            "registered": o.registered,
            "active": o.active,
            "in_pool": o.in_pool,
            "round_stake": o.round_stake,
            "reward_cut_ppm": o.reward_cut,
            "fee_share_ppm": o.fee_share,
            "stake": o.stake,
            "last_reward_round": o.last_reward_round,
        }
        lines.append(
            f"orchestrator: {'registered' if o.registered else 'not registered'}, "
            f"{_activity(o)}, reward cut "
            f"{percent(o.reward_cut)}, fee share {percent(o.fee_share)}, total "
            f"stake {readable(o.stake)}, last reward round {o.last_reward_round}"
        )
    return result, "\n".join(lines)
