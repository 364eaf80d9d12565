"""Amounts as people type them: wei or units (`1.5eth`, `10cast`, `2gwei`), percentages as parts
per million, and wei printed back in units, exactly (no floats anywhere)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation, localcontext

UNITS = {"wei": 0, "gwei": 9, "eth": 18, "cast": 18}  # CAST: the stake token, 18 decimals
PPM = 1_000_000
MAX_WEI = 2**256 - 1
_NUMBER = r"(\d{1,90}(?:\.\d{0,90})?|\.\d{1,90})"
_AMOUNT = re.compile(_NUMBER + r"\s*([a-z]*)")
_PERCENT = re.compile(_NUMBER + r"\s*%?")


class AmountError(ValueError):
    """Text that is not an amount (or percentage); the message says what was expected."""


def _scaled(number: str, places: int) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 200  # exact for every number the patterns accept
        try:
            return Decimal(number).scaleb(places)
        except InvalidOperation:
            raise AmountError(f"not a number: {number!r}") from None


def parse_amount(text: str, what: str = "amount", allow_zero: bool = False) -> int:
    """Wei from `1000` (wei), `2gwei`, `1.5eth` or `10cast` (18 decimals)."""
    match = _AMOUNT.fullmatch(text.strip().lower())
    unit = (match[2] or "wei") if match else ""
    if match is None or unit not in UNITS:
        raise AmountError(f"bad {what} {text!r}: use wei (1000) or units like 1.5eth, 10cast")
    wei = _scaled(match[1], UNITS[unit])
    if wei != wei.to_integral_value():
        raise AmountError(f"bad {what} {text!r}: finer than one wei")
    if wei == 0 and not allow_zero:
        raise AmountError(f"bad {what} {text!r}: must be more than zero")
    if wei > MAX_WEI:
        raise AmountError(f"bad {what} {text!r}: more than a uint256 holds")
    return int(wei)


def parse_percent(text: str, what: str = "percentage") -> int:
    """Parts per million from `10`, `10%` or `12.5%` (0 to 100)."""
    match = _PERCENT.fullmatch(text.strip())
    ppm = _scaled(match[1], 4) if match else Decimal(-1)
    if not 0 <= ppm <= PPM:
        raise AmountError(f"bad {what} {text!r}: a percentage from 0 to 100, like 10 or 12.5%")
    if ppm != ppm.to_integral_value():
        raise AmountError(f"bad {what} {text!r}: finer than one part per million")
    return int(ppm)


def units(wei: int, unit: str = "CAST") -> str:
    """`1.5 CAST` for 1.5 * 10**18 wei: exact, without trailing zeros."""
    with localcontext() as ctx:
        ctx.prec = 100
        return f"{Decimal(wei).scaleb(-18).normalize():f} {unit}"


def percent(ppm: int) -> str:
    """`12.5%` for 125000 parts per million."""
    with localcontext() as ctx:
        ctx.prec = 30
        return f"{Decimal(ppm).scaleb(-4).normalize():f}%"
