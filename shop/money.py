"""Formatting of integer minor units for people."""
from __future__ import annotations

# Currencies Stripe treats as having no minor unit (amounts are whole units).
ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)
SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "cad": "CA$", "aud": "A$"}


def format_money(amount: int, currency: str) -> str:
    """`1800, "usd"` → `$18.00`; `500, "jpy"` → `¥500`; unknown currencies get their code."""
    currency = currency.lower()
    if currency in ZERO_DECIMAL:
        number = f"{amount:,}"
    else:
        sign = "-" if amount < 0 else ""
        number = f"{sign}{abs(amount) // 100:,}.{abs(amount) % 100:02d}"
    symbol = SYMBOLS.get(currency)
    return f"{symbol}{number}" if symbol else f"{number} {currency.upper()}"


def minor_unit_factor(currency: str) -> int:
    return 1 if currency.lower() in ZERO_DECIMAL else 100
