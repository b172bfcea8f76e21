"""Jinja filters for money and dates."""
from __future__ import annotations

from datetime import UTC, datetime

from flask import Flask, current_app

from .money import format_money, minor_unit_factor


def money(amount: int, currency: str) -> str:
    """An amount in minor units, formatted for the shop's locale (`SHOP_LOCALE`)."""
    return format_money(amount, currency, current_app.config["SHOP_LOCALE"])


def isodate(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def humandate(moment: datetime) -> str:
    """`22 Nov 2026, 15:23 UTC`: the one date format, which js/dates.js repeats in local time."""
    moment = moment.astimezone(UTC)
    return f"{moment.day} {moment:%b %Y, %H:%M} UTC"


def init_app(app: Flask) -> None:
    app.add_template_filter(money)
    app.add_template_filter(minor_unit_factor, "minor_factor")
    app.add_template_filter(isodate)
    app.add_template_filter(humandate)
