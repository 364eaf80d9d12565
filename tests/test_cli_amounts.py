"""Amounts as a person reads and types them: `readable` (units, grouping, sensible precision) and
`parse_amount` refusing a bare number with a hint."""

from __future__ import annotations

import pytest

from node.amounts import AmountError, parse_amount, readable, units

ETH = 10**18


@pytest.mark.parametrize(
    ("wei", "unit", "text"),
    [
        (3 * ETH // 2, "ETH", "1.5 ETH"),
        (538461538461538461538461, "CAST", "538,461.54 CAST"),  # 2 decimals, rounded
        (10**24, "CAST", "1,000,000 CAST"),  # no trailing zeros
        (ETH, "CAST", "1 CAST"),
        (0, "ETH", "0 ETH"),
        (0, "CAST", "0 CAST"),
        (5 * 10**14, "ETH", "0.0005 ETH"),  # below 1: four significant digits
        (12345678 * 10**9, "ETH", "0.01235 ETH"),
        (999_995 * 10**13, "CAST", "10 CAST"),  # 9.99995 rounds up to 10
        (2 * 10**10, "ETH", "20 gwei"),  # under a millionth of an ETH: gwei
        (1_500_000_000, "ETH", "1.5 gwei"),
        (2 * 10**8, "ETH", "0.2 gwei"),  # a price per pixel
        (999_999, "ETH", "999,999 wei"),  # under a thousandth of a gwei: wei
        (123, "ETH", "123 wei"),
        (-3 * ETH, "CAST", "-3 CAST"),
        (1, "CAST", "0.000000000000000001 CAST"),  # CAST never switches unit
    ],
)
def test_readable_amounts(wei: int, unit: str, text: str) -> None:
    assert readable(wei, unit) == text


def test_readable_rounds_where_units_is_exact() -> None:
    wei = 538461538461538461538461
    assert units(wei) == "538461.538461538461538461 CAST"
    assert readable(wei) == "538,461.54 CAST"


@pytest.mark.parametrize(
    ("text", "unit", "hint"),
    [
        ("10", "eth", "give a unit, like 10eth (or 10wei)"),
        ("1000", "cast", "give a unit, like 1000cast (or 1000wei)"),
        ("1.5", "eth", "give a unit, like 1.5eth"),
    ],
)
def test_a_bare_number_is_refused_with_a_hint(text: str, unit: str, hint: str) -> None:
    with pytest.raises(AmountError, match="bad --eth") as exc:
        parse_amount(text, "--eth", unit=unit)
    assert hint in str(exc.value) and "\n" not in str(exc.value)
    assert parse_amount(text + unit) == int(float(text) * 10**18)
    if text.isdigit():
        assert parse_amount(text + "wei") == int(text)


def test_wei_and_gwei_are_units_too() -> None:
    assert parse_amount("1000wei") == 1000
    assert parse_amount("2gwei") == 2 * 10**9
    with pytest.raises(AmountError, match=r"use units like 1\.5eth"):
        parse_amount("5 btc")
