"""How much of a sender's deposit and reserve a recipient can count on (Livepeer's max float)."""

from __future__ import annotations

from events.crypto import to_checksum
from payments.errors import InsufficientFunds, SenderUnlocking
from payments.interfaces import SenderInfo

# Livepeer ignores the amount pending redemption when the deposit is at least this many times it:
# the deposit alone will then pay the pending tickets, leaving the reserve share untouched.
MIN_DEPOSIT_PENDING_RATIO = 3


def reserve_alloc(info: SenderInfo, pool_size: int) -> int:
    """This recipient's share of the sender's reserve this round: the reserve split evenly over
    the active pool, less what the recipient already claimed from it."""
    if pool_size <= 0:
        return 0
    share = (info.reserve + info.reserve_claimed_in_round) // pool_size
    return max(0, share - info.claimed_by_recipient)


def max_float(info: SenderInfo, pool_size: int, pending: int) -> int:
    """The face value a recipient can be sure to be paid: its reserve share, less the face value
    of tickets pending redemption unless the deposit covers those three times over."""
    alloc = reserve_alloc(info, pool_size)
    if pending > 0 and info.deposit >= MIN_DEPOSIT_PENDING_RATIO * pending:
        return alloc
    return max(0, alloc - pending)


def available_funds(info: SenderInfo, pool_size: int, pending: int) -> int:
    """What could pay this recipient's next ticket: deposit plus reserve share, less pending."""
    return max(0, info.deposit + reserve_alloc(info, pool_size) - pending)


def check_not_unlocking(sender: bytes, info: SenderInfo, current_round: int) -> None:
    """Refuse a sender whose funds unlock by the round after next (they may vanish before a
    winning ticket is redeemed)."""
    if info.withdraw_round != 0 and info.withdraw_round <= current_round + 1:
        raise SenderUnlocking(
            f"sender {to_checksum(sender)} unlocks its deposit in round {info.withdraw_round}, "
            f"too soon after the current round {current_round}"
        )


def check_covers(sender: bytes, face_value: int, funds: int, what: str) -> None:
    """Raise InsufficientFunds unless `funds` covers `face_value`."""
    if face_value > funds:
        raise InsufficientFunds(
            f"sender {to_checksum(sender)}: {what} {funds} wei cannot cover face value "
            f"{face_value} wei (short by {face_value - funds} wei)"
        )
