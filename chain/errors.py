"""Chain failures, one class per revert a caller may want to handle, each carrying the reason."""

from __future__ import annotations


class ChainError(Exception):
    """A chain call failed: unreachable endpoint, a revert, or a transaction that did not land."""


class Reverted(ChainError):
    """The contract refused; `reason` is its revert string."""

    def __init__(self, reason: str, call: str = "") -> None:
        super().__init__(f"{call} reverted: {reason}" if call else f"reverted: {reason}")
        self.reason = reason


class TicketUsed(Reverted):
    pass


class TicketExpired(Reverted):
    pass


class TicketLost(Reverted):
    pass


class BadTicketSignature(Reverted):
    pass


class BadRecipientRand(Reverted):
    pass


class BadCreationRound(Reverted):
    pass


class AccountLocked(Reverted):
    pass


class RoundAlreadyInitialized(Reverted):
    pass


class StakeLocked(Reverted):
    """An unbonding lock's period has not passed."""


class NotRegistered(Reverted):
    """The address is not a registered orchestrator (or not an active one)."""


class AlreadyRewarded(Reverted):
    pass


class InsufficientStake(Reverted):
    """More than is bonded, or than the account holds, or nothing at all."""


_BY_REASON: dict[str, type[Reverted]] = {
    "ticket is used": TicketUsed,
    "ticket is expired": TicketExpired,
    "ticket did not win": TicketLost,
    "invalid signature over ticket hash": BadTicketSignature,
    "signature s is high": BadTicketSignature,
    "signature v must be 27 or 28": BadTicketSignature,
    "recipientRand does not match recipientRandHash": BadRecipientRand,
    "ticket creationRound blockHash invalid": BadCreationRound,
    "account is locked": AccountLocked,
    "sender is not unlocking": AccountLocked,
    "round already initialized": RoundAlreadyInitialized,
    "unbonding period has not passed": StakeLocked,
    "orchestrator is not registered": NotRegistered,
    "not a registered orchestrator": NotRegistered,
    "orchestrator is not active": NotRegistered,
    "ticket recipient is not a registered orchestrator": NotRegistered,
    "already rewarded in this round": AlreadyRewarded,
    "unbond amount exceeds bonded stake": InsufficientStake,
    "transfer amount exceeds balance": InsufficientStake,
    "nothing to bond": InsufficientStake,
    "not bonded": InsufficientStake,
    "no fees to withdraw": InsufficientStake,
}


def reverted(reason: str, call: str = "") -> Reverted:
    """The specific error for a revert reason (Reverted itself for the others)."""
    return _BY_REASON.get(reason, Reverted)(reason, call)
