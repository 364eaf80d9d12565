"""Session balances: credit from tickets (their EV), debit of fees (output pixels x price per
pixel), and refusal of work below a minimum balance. Exact fractions of a wei throughout."""

from __future__ import annotations

from fractions import Fraction

from payments.errors import InsufficientBalance, InvalidParams


def segment_fee(pixels: int, price_per_pixel: Fraction) -> Fraction:
    """What a segment costs: output pixels x price per pixel (wei)."""
    if pixels < 0:
        raise InvalidParams(f"pixel count must not be negative, got {pixels}")
    return pixels * price_per_pixel


def tickets_needed(fee: Fraction, balance: Fraction, ticket_ev: Fraction) -> int:
    """How many tickets of `ticket_ev` a sender must add to `balance` to cover `fee`."""
    missing = fee - balance
    if missing <= 0:
        return 0
    if ticket_ev <= 0:
        raise InvalidParams("tickets of zero EV cannot cover a fee")
    quotient = missing / ticket_ev
    return -(-quotient.numerator // quotient.denominator)


class Balances:
    """Per-session balances, in wei; a recipient credits EV and debits fees, a sender can mirror
    it to know how many tickets to send. `min_balance` is what must remain after a charge."""

    __slots__ = ("_balances", "_min_balance")

    def __init__(self, min_balance: Fraction = Fraction(0)) -> None:
        self._min_balance = Fraction(min_balance)
        self._balances: dict[str, Fraction] = {}

    def balance(self, session: str) -> Fraction:
        return self._balances.get(session, Fraction(0))

    def credit(self, session: str, amount: Fraction) -> Fraction:
        """Add `amount` (e.g. a ticket's EV); return the new balance."""
        if amount < 0:
            raise InvalidParams(f"a credit must not be negative, got {amount}")
        new = self.balance(session) + amount
        self._balances[session] = new
        return new

    def check(self, session: str, fee: Fraction = Fraction(0)) -> None:
        """Raise InsufficientBalance (naming the shortfall) unless the session can pay `fee`
        and keep at least the minimum balance: call before doing the work."""
        required = fee + self._min_balance
        balance = self.balance(session)
        if balance < required:
            raise InsufficientBalance(session, balance, required)

    def debit(self, session: str, fee: Fraction) -> Fraction:
        """Subtract `fee` unconditionally (work already done); return the new balance."""
        if fee < 0:
            raise InvalidParams(f"a fee must not be negative, got {fee}")
        new = self.balance(session) - fee
        self._balances[session] = new
        return new

    def charge(self, session: str, fee: Fraction) -> Fraction:
        """`check` then `debit`: the fee is taken only if the session can afford it."""
        self.check(session, fee)
        return self.debit(session, fee)

    def close(self, session: str) -> Fraction:
        """Forget a session; return its final balance."""
        return self._balances.pop(session, Fraction(0))
