"""Amounts as people type them: units (`1.5eth`, `10cast`, `2gwei`, or `1000wei`), percentages as
parts per million, and wei printed back in units: exactly (`units`), or rounded for reading
(`readable`: `1.5 ETH`, `538,461.54 CAST`). No floats anywhere."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext

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


def parse_amount(
    text: str, what: str = "amount", allow_zero: bool = False, unit: str = "eth"
) -> int:
    """Wei from an amount with its unit: `2gwei`, `1.5eth`, `10cast` (18 decimals) or `1000wei`.
    A bare number is refused (is `10` ten ETH or ten wei?) with a hint in `unit`, the unit the
    caller expects."""
    match = _AMOUNT.fullmatch(text.strip().lower())
    if match is not None and not match[2]:
        wei = f" (or {match[1]}wei)" if match[1].isdigit() else ""
        raise AmountError(f"bad {what} {text!r}: give a unit, like {match[1]}{unit}{wei}")
    if match is None or match[2] not in UNITS:
        raise AmountError(f"bad {what} {text!r}: use units like 1.5eth, 10cast, 2gwei or 1000wei")
    wei = _scaled(match[1], UNITS[match[2]])
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


def readable(wei: int, unit: str = "CAST") -> str:
    """wei as a person reads it, in `unit` (18 decimals): thousands grouped and two decimals from
    1 up (`538,461.54 CAST`, `1.5 ETH`), four significant digits below 1 (`0.0005 ETH`); ETH amounts
    under a millionth of an ETH in gwei (`20 gwei`, `0.2 gwei`), under a thousandth of a gwei in
    wei. Rounded half to even;
    `units` gives the exact value."""
    sign, wei = ("-", -wei) if wei < 0 else ("", wei)
    if wei == 0:
        return f"0 {unit}"
    if unit == "ETH" and wei < 10**12:
        unit, places = ("gwei", 9) if wei >= 10**6 else ("wei", 0)
    else:
        places = 18
    with localcontext() as ctx:
        ctx.prec = 100
        value = Decimal(wei).scaleb(-places)
        # from 1 up two decimals; below, four significant digits (3 places past the first)
        quantum = Decimal("0.01") if value >= 1 else Decimal(1).scaleb(value.adjusted() - 3)
        text = f"{value.quantize(quantum, rounding=ROUND_HALF_EVEN):,f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{sign}{text} {unit}"
