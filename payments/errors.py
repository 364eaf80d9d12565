"""The payments exception hierarchy: one class per reason a payment is refused, so callers can tell
a forged ticket from a replay from an underfunded sender without parsing messages."""

from __future__ import annotations

from fractions import Fraction


class PaymentError(Exception):
    """Base of every error raised by `payments`."""


class InvalidTicket(PaymentError):
    """A ticket whose contents are wrong: malformed fields, bad signature, not addressed to us."""


class WrongRecipient(InvalidTicket):
    """The ticket pays someone else."""


class InvalidSender(InvalidTicket):
    """The ticket's sender is the zero address."""


class InvalidSignature(InvalidTicket):
    """The signature is malformed or was not made by the ticket's sender over these fields
    (a forged or tampered ticket)."""


class MalleableSignature(InvalidSignature):
    """The signature's s is in the upper half of the curve order (EIP-2): a malleable twin."""


class UnknownRandHash(InvalidTicket):
    """The ticket's recipient_rand_hash is not one we issued for these params (or the params were
    altered after we issued them)."""


class TicketReplay(PaymentError):
    """This sender nonce was already used with this recipient_rand_hash."""


class TooManyTickets(PaymentError):
    """A recipient_rand_hash has used up its nonce budget; the sender must fetch fresh params."""


class ParamsExpired(PaymentError):
    """The ticket params' expiration block has passed (or is too close for the sender to use)."""


class InvalidParams(PaymentError):
    """A sender refuses ticket params: EV too high, face value not above EV, malformed fields."""


class InsufficientFunds(PaymentError):
    """The sender's on-chain deposit and reserve cannot cover the face value."""


class SenderUnlocking(InsufficientFunds):
    """The sender's deposit and reserve unlock too soon to be relied upon."""


class UnknownSession(PaymentError):
    """No sender session exists for this id."""


class InsufficientBalance(PaymentError):
    """A session's credit is below what the work needs; `shortfall` says by how much (wei)."""

    def __init__(self, session: str, balance: Fraction, required: Fraction) -> None:
        self.session = session
        self.balance = balance
        self.required = required
        self.shortfall = required - balance
        super().__init__(
            f"session {session}: balance {format_wei(balance)} wei is below the "
            f"{format_wei(required)} wei required, short by {format_wei(self.shortfall)} wei"
        )


class RedemptionFailed(PaymentError):
    """A redemption transaction failed; `retryable` says whether trying again may succeed."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class TicketAlreadyRedeemed(RedemptionFailed):
    """The chain has already paid this ticket: never retried."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


def format_wei(amount: Fraction) -> str:
    """An exact amount for a message: an integer, or a fraction with a short decimal beside it."""
    if amount.denominator == 1:
        return str(amount.numerator)
    return f"{amount.numerator}/{amount.denominator} (~{float(amount):.6g})"
