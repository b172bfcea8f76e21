"""Amounts are integers in the currency's minor unit everywhere; this turns them into text.

How many minor units make one unit is Stripe's rule, not ISO's: Stripe takes zero-decimal
currencies in whole units and its three-decimal currencies in thousandths. Symbols, digit
grouping and decimals for display come from the CLDR data in Babel, for the shop's locale.
"""
from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

from babel.numbers import format_currency

# Stripe's zero-decimal currencies: the amount is in whole units (¥500 is 500).
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
# Stripe's three-decimal currencies: the amount is in thousandths (5.120 KWD is 5120).
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())
DEFAULT_LOCALE = "en_US"


def minor_unit_digits(currency: str) -> int:
    """Decimal places in a Stripe amount of this currency: 0, 2 or 3."""
    currency = currency.lower()
    return 0 if currency in ZERO_DECIMAL else 3 if currency in THREE_DECIMAL else 2


def minor_unit_factor(currency: str) -> int:
    """Minor units in one unit of the currency, as Stripe counts them."""
    return 10 ** minor_unit_digits(currency)


def to_units(amount: int, currency: str) -> Decimal:
    """`1234, "usd"` → `Decimal("12.34")`, exactly."""
    return Decimal(amount).scaleb(-minor_unit_digits(currency))


@lru_cache(maxsize=4096)  # a page formats the same few prices again and again; Babel's formatting is slow
def format_money(amount: int, currency: str, locale: str = DEFAULT_LOCALE) -> str:
    """`1800, "usd"` → `$18.00`; `500, "jpy"` → `¥500`; `5120, "kwd"` → `KWD 5.120`; `150000, "inr"` → `₹1,500.00`."""
    return format_currency(to_units(amount, currency), currency.upper(), locale=locale)
